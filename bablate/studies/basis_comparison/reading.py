"""Reading a task set in one basis (AMDs and their metrics), and in every basis of a site."""

from __future__ import annotations

import time

import jax
import numpy as np

import bablate as bb
from bablate import progress

from .bases import rebase
from .config import InferenceConfig, SVIConfig

INFORMATIVE_BITS = bb.metrics.INFORMATIVE_BITS  # tasks below it are left out of per-task means

Tasks = bb.TaskSet | list[bb.Task]  # a task set on one site and dataset, or separate tasks


def infer_all(tasks: Tasks, how: InferenceConfig | SVIConfig, key: jax.Array,
              desc: str = "") -> list[bb.Posterior]:
    """The AMD of every task.

    With an :class:`InferenceConfig`: exact enumeration up to ``max_exact`` units (one pass for
    a :class:`bablate.TaskSet`), MCMC with informed flips beyond. With an :class:`SVIConfig`:
    mean-field SVI of every task. Task j draws from ``fold_in(key, j)``.
    """
    if isinstance(how, SVIConfig):
        return [svi(t, how, jax.random.fold_in(key, j))
                for j, t in enumerate(progress.track(list(tasks), desc=desc, unit="task"))]
    return bb.infer_many(tasks, "auto", key=key, max_exact=how.max_exact,
                         num_samples=how.mcmc.num_samples, num_warmup=how.mcmc.num_warmup,
                         num_chains=how.mcmc.num_chains)


def svi(task: bb.Task, sc: SVIConfig, key: jax.Array) -> bb.Posterior:
    """Mean-field SVI of one task with the study's settings."""
    chunk = max(1, min(10, sc.num_steps))
    return bb.infer(task, "svi", key=key, estimator=sc.estimator,
                    num_steps=chunk * -(-sc.num_steps // chunk),
                    num_particles=sc.num_particles, learning_rate=sc.learning_rate,
                    temperature=sc.temperature, num_draws=200, steps_per_call=chunk)


def top_k_share(unit_information: np.ndarray, k: int) -> float:
    """Fraction of Σ_i I_i carried by the k most informative units (NaN when Σ I = 0)."""
    info = np.sort(np.asarray(unit_information))[::-1]
    total = info.sum()
    return float(info[:k].sum() / total) if total > 0 else float("nan")


def p_correct_own(tasks: Tasks, masks_TxMxD: np.ndarray) -> np.ndarray:
    """Hard P(correct) of each task under its own few masks, ``[T, M]``: for a task set the
    network runs once per mask and each rule reads its rows; separate tasks run one by one."""
    # float64, so that means over tasks do not round in float32
    if isinstance(tasks, bb.TaskSet):
        return np.asarray(tasks.p_correct(masks_TxMxD), np.float64)
    return np.stack([np.asarray(t.p_correct(m), np.float64)
                     for t, m in zip(tasks, masks_TxMxD, strict=True)])


def read_tasks(tasks: Tasks, how: InferenceConfig | SVIConfig, key: jax.Array,
               top_k: tuple[int, ...], desc: str = "") -> dict:
    """AMDs of a task set in one basis and the metrics compared across bases
    (:func:`bablate.metrics.summarize_tasks`: per-task means over informative tasks; mean-field
    posteriors have no total correlation).

    Returns:
      Plain values only (lists, floats, ints, strings), ready for results.json.
    """
    start = time.perf_counter()
    posts = infer_all(tasks, how, key, desc)
    seconds = time.perf_counter() - start
    m = bb.metrics.summarize_tasks(posts, INFORMATIVE_BITS)
    d = tasks[0].num_units
    out = {
        "num_units": d, "method": posts[0].method, "tasks": [t.name for t in tasks],
        "inference_seconds": seconds,
        "informative_tasks": m.informative_tasks,
        "task_information": m.task_information.tolist(),
        "distributedness": m.distributedness.tolist(),
        "effective_units": m.effective_units.tolist(),
        "total_correlation": m.total_correlation.tolist(),
        "unit_information": m.unit_information.tolist(),
        "unit_importance": m.unit_importance.tolist(),
        "distributedness_mean": m.distributedness_mean,
        "effective_units_mean": m.effective_units_mean,
        "total_correlation_mean": m.total_correlation_mean,
        "task_information_mean": m.task_information_mean,
    }
    ks = [k for k in top_k if k <= d]
    # Per task: the intact network, every unit ablated, then only the k most important units
    # kept.
    masks = np.zeros((len(tasks), 2 + len(ks), d), np.float32)
    masks[:, 0] = 1.0
    for j, importance in enumerate(m.unit_importance):
        order = np.argsort(-importance, kind="stable")
        for r, k in enumerate(ks):
            masks[j, 2 + r, order[:k]] = 1.0
    kept = p_correct_own(tasks, masks)
    out["p_correct_intact"] = kept[:, 0].tolist()
    out["p_correct_ablated"] = kept[:, 1].tolist()
    out["p_correct_ablated_mean"] = float(kept[:, 1].mean())
    kept = np.concatenate([kept[:, :1], kept[:, 2:]], axis=1)
    for r, k in enumerate(ks):
        out[f"top{k}_share"] = m.mean(np.array([top_k_share(info, k)
                                                for info in m.unit_information]))
        out[f"top{k}_p_correct"] = m.mean(kept[:, 1 + r])
    if len(posts) > 1:
        assert m.effective_tasks is not None  # TaskSetMetrics has them for two tasks or more
        out.update({
            "effective_tasks": m.effective_tasks.tolist(),
            "polysemanticity_mean": m.polysemanticity_mean,
            # Weighted by each unit's total information, so that units carrying next to
            # nothing (inference noise on a large site) count for next to nothing.
            "polysemanticity_weighted": m.polysemanticity_weighted,
            "units_serving_tasks": m.units_serving_tasks,
            "unit_task_mi_mean": m.unit_task_mi_mean,
        })
    return out


def compare_bases(tasks: Tasks, bases: dict[str, bb.Basis | None],
                  how: InferenceConfig | SVIConfig, key: jax.Array, top_k: tuple[int, ...],
                  network: str) -> dict[str, dict]:
    """:func:`read_tasks` for the same tasks in every basis (``None`` = neurons); basis b draws
    from ``fold_in(key, b)``."""
    out = {}
    for b, (name, basis) in enumerate(bases.items()):
        rebased = rebase(tasks, basis)
        out[name] = read_tasks(rebased, how, jax.random.fold_in(key, b), top_k,
                               desc=f"{network}: {name}")
    return out
