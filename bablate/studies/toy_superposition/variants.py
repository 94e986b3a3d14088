"""Toy superposition: Elhage et al. (2022), "Toy Models of Superposition", read with Bayesian
ablation and coding-theory geometry (DESIGN.md §3; Marshall & Kirchner, arXiv 2401.17975).

Reproduces: the weight-norm / superposition bars and WᵀW heatmaps of the 20→5 model across
sparsity (paper §3, "Superposition as a phase change" intro figure), the 5→2 pentagon (§4), the
100→20 "dimensions per feature" plateau at 1/2 and the clustering of feature dimensionality
D_i at 1, 3/4, 2/3, 1/2, 2/5, 3/8 (§5, "Feature dimensionality"), and computation in
superposition with a ReLU hidden layer computing |x| (§8). New: the ablation mask
distribution of every feature-reconstruction task over the hidden dimensions (polysemanticity,
distributedness, total correlation), and the code's eigenspectrum exponent α and participation
ratio.

Commands, with the CPU time measured on a 2-core machine (wall time was 3–5× longer while
other jobs held the load average at 15; on idle cores expect about the CPU time). quick,
n5_m2, n20_m5 and relu_hidden include the basis control and were last measured with it at load
averages 4–8 (quick 93 CPU-s in 137 s wall; 120 CPU-s before its feature tasks shared one
compiled enumeration, whose time pays for the control's):

    python -m bablate --config=toy_superposition:quick        # 95 CPU-s, 20→5
    python -m bablate --config=toy_superposition:n5_m2        # 100 CPU-s, pentagon
    python -m bablate --config=toy_superposition:n20_m5       # 215 CPU-s, 3 seeds
    python -m bablate --config=toy_superposition:n100_m20     # ~15 CPU-min
    python -m bablate --config=toy_superposition:relu_hidden  # 145 CPU-s, |x|
    python -m bablate --config=toy_superposition:notebook     # 20→5, 8 seeds
    python -m bablate --config=toy_superposition:quick --sweep   # seeds 0..2

Expected numbers: 20→5 keeps the top 5 features (‖W_i‖ > 0.5) at density 1 and represents
most features when sparse (paper: nearly all 20 at 1 − S = 0.001; here 11–15 of 20 with
I_i = 0.7^i, the least important features staying below the 0.5 norm threshold: 12.9
[12.0, 13.7] over n20_m5's 7 xavier-start seeds, 13.4 [11.5, 15.3] over quick's 5, mean and
95% t-interval; the count depends on the threshold, so every instance also reports
features_represented_at ‖W_i‖ > 0.1, 0.25 and 0.5; the quick and n20_m5 variants train a
control at 1 − S = 0.001 from a start with all 20 features represented, which keeps 13–16,
not clearly more (difference of means +1.5 [−1.1, 4.1] and +1.0 [−0.9, 2.9] features, Welch),
at a higher held-out loss (quick +11%, +3.0e-6 [0.7e-6, 5.4e-6]; n20_m5 +6%, an interval
[−0.3e-6, 3.6e-6] that includes 0)); 5→2 places
all 5 features on a pentagon at the sparse end (D_i ≈ 2/5; here in 5 of the 10 instances with
1−S ≤ 0.19, the others keep two antipodal pairs); 100→20 dimensions per feature near 1/2 over
the middle sparsities; the polysemanticity of hidden dimensions (effective number of feature
tasks each serves) rises with sparsity, judged in random rotations of the tied models' hidden
space (quick: 3.2 ± 0.2 at 1−S = 1 → 6.1 ± 0.3 at 0.001 over 4 rotations, +2.9 [2.4, 3.4];
the trained basis reads 3.8 → 6.4; 5→2: 1.8 ± 0.4 → 3.0 ± 1.0) and less clearly in the |x|
model's neurons (1.0 → 2.0); distributedness falls instead of rising (quick, rotated:
0.64 ± 0.04 → 0.48 ± 0.03, −0.16 [−0.22, −0.10]); exact vs MCMC marginals agree within 0.02
(quick) to 0.05.

Basis control (``rotation_control.num_rotations``: 4 in quick, 8 elsewhere, off in n100_m20,
where each rotation is another 2^20-mask enumeration per density): replicate 0's ablated
instances are ablated again in the codes of k Haar-random rotations of the hidden space
(``bb.Basis.orthogonal``; the same network and examples). The tied models' hidden basis is not
privileged: rotating W keeps the loss (measured ≤ 2.5e-7 relative change), so every ablation
metric read on their hidden dimensions depends on the basis (sd over rotations 2–43% of the
mean in quick) and the report judges their trends on the rotated values; quick's trained basis
is still not a typical one for distributedness and total correlation (above all 4 rotations at
5 of 7 densities, p = 0.009), which only training can have made so. The |x| model's neurons
are privileged: rotating its weights raises the loss 3–10-fold, and its neuron basis is far
more local than rotated ones (distributedness 0.18–0.27 against 0.25–0.58, below all 8
rotations at every density, p = 4e-7; polysemanticity 1.0 against 2.4 ± 0.3 when dense), so
its neuron-level readings stand.

Training recipe: the paper's (AdamW lr 1e-3, weight decay 0.01, batch 1024, xavier-normal
W per instance, loss summed over features). The paper's public notebook
(anthropics/toy-models-of-superposition) differs in two ways, selectable here:
train.init = "notebook" (torch xavier-normal on the stacked [instances, n, m] tensor, so the
std √(2/(m(n + instances))) shrinks with the instance count; train.init_instances sets that
count, 0 = the instances trained at once) and train.loss = "mean" (mean over features). The
notebook recipe gives the same count at the sparse end as ours. The ``notebook`` variant
trains 8 seeds of 20→5 at 1 − S = 0.001 for 10,000 steps with the notebook recipe (with
``--config.train.init=xavier --config.train.loss=sum``: with ours); measured, seed 0, features
with ‖W_i‖ above 0.5 / 0.25 / 0.1: notebook 12–14 (mean 12.8) / 16.0 / 17.1, ours 12–15
(mean 13.4) / 16.5 / 19.6 of 20. The paper's 20→5 figure, with nearly all 20 represented,
came from code that is not public. Defaults: ours. (notebook variant: ~4 CPU-min, mostly the
ablation of 5 feature tasks per seed.)

Bayesian ablation: site = the m hidden dimensions (for relu_hidden, the m hidden ReLU
neurons); one task per feature i, "feature i reconstructed": positives are samples of the data
distribution conditioned on x_i ≠ 0, negatives conditioned on x_i = 0, and an output is correct
when |x'_i − target_i| < ablation.epsilon = 0.25. Why 0.25: sparse models suppress
interference with a negative bias (b_i ≈ −0.1 to −0.2) and stretch ‖W_i‖ above 1, so their intact
reconstructions are often 0.1 off; with ε = 0.25 the intact network is right on almost every
positive of each represented feature (every represented feature's task is informative), while
dropping a hidden dimension that carries a quarter or more of ‖W_i‖² makes large x_i wrong.
Sensitivity (quick's trained models, polysemanticity at 1−S = 1 → 0.001): ε = 0.1 gives
4.8 → 4.9 (flat: only 5 of 13 represented features' tasks are informative at the sparse end),
ε = 0.25 gives 3.8 → 6.4, ε = 0.4 gives 2.5 → 5.4. AMDs by exact enumeration; one instance is
checked against MCMC (max |marginal difference| in the results).
"""

from bablate.runner import config_checks
from bablate.studies.toy_superposition.config import DENSITIES_20_5, StudyConfig

__all__ = ["DENSITIES_20_5", "VARIANTS", "get_config", "get_sweep"]

VARIANTS = ("quick", "n5_m2", "n20_m5", "n100_m20", "relu_hidden", "notebook")


def get_config(arg=None):
    """The ConfigDict of one variant: `StudyConfig`'s defaults (config.py, where every field is
    declared with its check), then the variant's values by name."""
    variant = config_checks.variant(arg, VARIANTS)
    c = config_checks.config_dict(StudyConfig, study="toy_superposition", variant=variant)
    c.rotation_control.num_rotations = 8  # the basis control (off when a config leaves it out)
    if variant in ("quick", "n20_m5"):
        c.control.num_seeds = 4
    if variant == "quick":
        c.train.steps = 6000
        c.rotation_control.num_rotations = 4
        c.ablation.num_positive = 128
        c.ablation.num_negative = 128
        c.ablation.mcmc_check.num_warmup = 300
    elif variant == "n5_m2":
        c.setting = "5->2"
        c.n_features, c.m_hidden = 5, 2
        c.importance.value = 0.9
        c.densities = []
        c.density_grid.num = 10
        c.num_replicates = 2
    elif variant == "n20_m5":
        c.num_replicates = 3
    elif variant == "n100_m20":
        c.setting = "100->20"
        c.n_features, c.m_hidden = 100, 20
        c.importance.kind, c.importance.value = "loglinear", 100.0
        c.densities = []
        c.density_grid.num = 20
        c.geometry.num_samples = 4096
        # 2^20 masks per task: ablate every 10th feature at 4 densities, dense to sparsest.
        c.ablation.feature_stride = 10
        c.ablation.num_positive = 64
        c.ablation.num_negative = 64
        c.ablation.num_densities = 4
        # Each rotation is another 2^20-mask enumeration per density: off unless asked for.
        c.rotation_control.num_rotations = 0
    elif variant == "notebook":
        # The public notebook's recipe at the sparse end, over 8 seeds; the init scale uses
        # the 8 instances trained together, as the notebook's would.
        c.densities = [0.001]
        c.num_replicates = 8
        c.train.init, c.train.loss = "notebook", "mean"
        c.ablation.feature_stride = 4  # the point here is the weight norms; ablate 5 features
        c.ablation.mcmc_check.enabled = False
    elif variant == "relu_hidden":
        c.setting = "20->10 |x|"
        c.model = "relu_hidden"
        c.n_features, c.m_hidden = 20, 10
        c.importance.value = 0.8
    return c


def get_sweep(arg=None):
    return [{"seed": s} for s in range(3)]
