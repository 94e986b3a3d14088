"""A posterior's draws as an ``arviz.InferenceData`` (the ``arviz`` extra).

arviz is imported here only, when a user asks for it, so the library runs without it.
"""

from __future__ import annotations

import warnings

import numpy as np

from bablate.inference.posterior import Posterior

# Our per-draw stat names -> arviz's conventional sample-stat names (as numpyro's converter
# writes them), so arviz's plots and summaries find them.
_STAT_NAMES = {"accept_prob": "acceptance_rate", "step_size": "step_size"}


def import_arviz():
    """arviz, or a one-line error saying how to install it."""
    try:
        with warnings.catch_warnings():
            # arviz 0.2x announces its coming refactor with a FutureWarning on import.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as e:
        raise ImportError("to_arviz and bablate.plot's trace plots need arviz; install "
                          "it with pip install 'bablate[arviz]'.") from e
    return arviz


def to_inference_data(post: Posterior):
    """See :meth:`Posterior.to_arviz`."""
    post._draws("to_arviz()")  # an exact table has no draws: say so in to_arviz's name
    az = import_arviz()
    chains = post.chains()
    c, s, d = chains.shape
    sample_stats = {}
    if post.log_density is not None:
        sample_stats["lp"] = post.chain_log_density()
    for name, values in post.sample_stats.items():
        sample_stats[_STAT_NAMES.get(name, name)] = np.asarray(values).reshape(c, s)
    coords = {"unit": np.arange(d)}
    attrs = {"task": post.task, "method": post.method, "site": post.site, "beta": post.beta,
             "inference_library": "bablate"}
    # int64, not uint8: arviz treats signed integers as discrete (histograms, not densities).
    return az.from_dict(posterior={"mask": chains.astype(np.int64)},
                        sample_stats=sample_stats or None,
                        constant_data={"prior": np.asarray(post.prior)}, coords=coords,
                        dims={"mask": ["unit"], "prior": ["unit"]}, attrs=dict(attrs),
                        posterior_attrs=dict(attrs))
