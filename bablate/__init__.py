"""bablate: Bayesian ablation in JAX.

The ablation mask distribution (AMD) P(mask | task, correct) ∝ prior(mask) · odds(correct |
task, mask)^β tells which sets of units a trained network uses to get a task right.

    import bablate as bb
    site = bb.Site.from_functions("hidden", d, prefix, suffix)   # or bb.flax_site(...)
    task = bb.Task.build(site, inputs, bb.rules.top1(targets))
    post = bb.infer(task, method="exact")                        # or "mcmc"/"svi" with key=
    post = bb.infer(task, "mcmc", key, options=bb.McmcOptions(num_samples=500))
    bb.metrics.summarize(post).distributedness
    task_set = bb.TaskSet.build(site, inputs, {"a": rule_a, "b": rule_b})
    posts = bb.infer_many(task_set, "auto", key=jax.random.key(0))  # exact if d <= 16
    bb.metrics.summarize_tasks(posts).as_dict()                  # per task, means, polysemanticity
    bb.report(posts, "out")                                      # figures + report.md
    posts[0].save("p.npz"); bb.load_posterior("p.npz")           # plain npz, read back equal
"""

from bablate import metrics, plot, progress, rules
from bablate.amd import amd_model, log_joint, make_model
from bablate.flax_sites import flax_site, list_sites, run_with_cache
from bablate.hooked_sites import mark
from bablate.inference import (
    ExactOptions,
    FlipKernel,
    ImportanceOptions,
    McmcOptions,
    Posterior,
    SviOptions,
    exact,
    importance,
    infer,
    infer_many,
    mcmc,
    svi,
)
from bablate.inference.posterior import load_posterior
from bablate.nnx_sites import nnx_list_sites, nnx_run_with_cache, nnx_site
from bablate.plot import report
from bablate.rules import Rule
from bablate.sites import Basis, Site, mask_activation
from bablate.statefile import read_checkpoint
from bablate.tasks import Task
from bablate.taskset import TaskSet

progress.quiet_jax_backend_probe()  # before JAX starts a backend (it does so lazily)

__version__ = "0.1.0"  # the one version source; pyproject.toml reads it

__all__ = [
    "Basis", "ExactOptions", "FlipKernel", "ImportanceOptions", "McmcOptions", "Posterior",
    "Rule", "Site", "SviOptions", "Task", "TaskSet", "amd_model", "exact", "flax_site",
    "importance", "infer", "infer_many", "list_sites", "load_posterior", "log_joint",
    "make_model", "mark", "mask_activation", "mcmc", "metrics", "nnx_list_sites",
    "nnx_run_with_cache", "nnx_site", "plot", "read_checkpoint", "report", "rules",
    "run_with_cache", "svi",
]
