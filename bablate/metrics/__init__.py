"""Information-theoretic metrics of ablation mask distributions (DESIGN §2).

These are our reconstructions of the paper's suite; all quantities are in bits.

* unit importance π_i = q(m_i = 1); information I_i = KL(q_i ‖ prior_i);
* task information KL(q ‖ prior) (= d − H(q) under the uniform prior);
* distributedness: w_i = I_i / Σ_j I_j, effective units exp(H(w)), distributedness
  exp(H(w)) / d ∈ [1/d, 1]; undefined (NaN) when q carries no information;
* manifold complexity: total correlation TC = Σ_i H(q_i) − H(q);
* polysemanticity over a task set: effective number of tasks per unit exp(H(I_i(t)/Σ_t I_i(t)))
  and I(T; M_i) under the uniform mixture of task AMDs; task overlap by Jensen–Shannon.

Information below the prior. A unit whose removal *helps* the task has q_i < prior_i; KL counts
that as information too. ``unit_information_used`` is the part from units with q_i > prior_i (the
task uses them), ``unit_information_harmful`` the part from q_i < prior_i (the task goes better
without them). Distributedness and polysemanticity describe the code a task *uses*, so by
default (``information="used"``) they are computed on the used part; ``information="all"``
gives the plain KL of every unit.

H(q) and the estimators behind it: :mod:`bablate.metrics._entropy` (whose docstring says how
H(q) is estimated from MCMC draws); the metrics built on them: :mod:`bablate.metrics._summary`.
"""

from bablate.metrics._entropy import (
    LN2,
    MIN_RATIO_HITS,
    RatioEstimate,
    bernoulli_entropy,
    bernoulli_kl,
    chow_liu_bound,
    joint_entropy,
    normaliser_ratio_estimate,
    pairwise_mutual_information,
    plugin_entropy,
    table_entropy,
)
from bablate.metrics._summary import (
    INFORMATION,
    INFORMATIVE_BITS,
    Polysemanticity,
    TaskMetrics,
    TaskSetMetrics,
    distributedness,
    informative_mean,
    js_divergence,
    js_matrix,
    marginal_js_divergence,
    marginal_js_matrix,
    polysemanticity,
    split_information,
    summarize,
    summarize_tasks,
)

__all__ = [
    "INFORMATION", "INFORMATIVE_BITS", "LN2", "MIN_RATIO_HITS", "Polysemanticity", "RatioEstimate",
    "TaskMetrics", "TaskSetMetrics", "bernoulli_entropy", "bernoulli_kl", "chow_liu_bound",
    "distributedness", "informative_mean", "joint_entropy", "js_divergence", "js_matrix",
    "marginal_js_divergence", "marginal_js_matrix", "normaliser_ratio_estimate",
    "pairwise_mutual_information", "plugin_entropy", "polysemanticity", "split_information",
    "summarize", "summarize_tasks", "table_entropy",
]
