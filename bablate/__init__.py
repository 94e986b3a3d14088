"""bablate: Bayesian ablation in JAX.

The ablation mask distribution (AMD) P(mask | task, correct) ∝ prior(mask) · O(correct | task, mask)^β
tells which sets of units a trained network uses to get a task right. The public API is
re-exported here; modules below are importable on their own.
"""

__version__ = "0.1.0"
