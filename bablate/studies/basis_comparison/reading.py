"""Reading a task set in one basis (AMDs and their metrics), and in every basis of a site."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate import progress
from bablate.tasks import p_correct_from, site_outputs

from .bases import rebase
from .config import InferenceConfig, SVIConfig

INFORMATIVE_BITS = 0.1  # tasks carrying less information are left out of per-task means


def infer_all(tasks: list[bb.Task], how: InferenceConfig | SVIConfig, key: jax.Array,
              desc: str = "") -> list[bb.Posterior]:
    """The AMD of every task.

    With an :class:`InferenceConfig`: exact enumeration up to ``max_exact`` units (one pass for
    tasks sharing a site and inputs), MCMC with informed flips beyond. With an
    :class:`SVIConfig`: mean-field SVI of every task. Task j draws from ``fold_in(key, j)``.
    """
    if isinstance(how, SVIConfig):
        return [svi(t, how, jax.random.fold_in(key, j))
                for j, t in enumerate(progress.track(tasks, desc=desc, unit="task"))]
    if tasks[0].num_units <= how.max_exact:
        return bb.infer_many(tasks, "exact", max_units=max(how.max_exact, 20))
    return [bb.infer(t, method="mcmc", key=jax.random.fold_in(key, j),
                     num_samples=how.mcmc.num_samples, num_warmup=how.mcmc.num_warmup,
                     num_chains=how.mcmc.num_chains)
            for j, t in enumerate(progress.track(tasks, desc=desc, unit="task"))]


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


def p_correct_many(tasks: list[bb.Task], masks_TxMxD: np.ndarray) -> np.ndarray:
    """Hard P(correct) of each task under its own few masks, ``[T, M]``.

    Tasks that share a site and a dataset (one network run serves every rule) are evaluated
    in one compiled call: the network runs on all their masks once and each rule reads its
    rows. Other tasks go through :meth:`bablate.Task.p_correct`.
    """
    out = np.zeros(masks_TxMxD.shape[:2])
    groups: dict[tuple[int, int, int], list[int]] = {}
    for j, t in enumerate(tasks):
        key = (id(t.site), id(t.data["inputs"]), id(t.data["act"]))
        groups.setdefault(key, []).append(j)
    for members in groups.values():
        first = tasks[members[0]]
        if len(members) == 1:
            out[members[0]] = first.p_correct(masks_TxMxD[members[0]])
            continue
        flat = masks_TxMxD[members].reshape(-1, masks_TxMxD.shape[-1])
        outputs = _outputs_evaluator(first.site)(first.data, jnp.asarray(flat))
        per = masks_TxMxD.shape[1]
        for r, j in enumerate(members):
            t = tasks[j]
            own = slice(r * per, (r + 1) * per)
            rows = jax.tree.map(lambda o, own=own: o[own], outputs)
            c = jax.vmap(lambda o, t=t: t.rule.hard(o, t.data["rule"]))(rows)
            out[j] = np.asarray(p_correct_from(c.astype(jnp.float32), t.rule.positive))
    return out


def _outputs_evaluator(site: bb.Site):
    """A jitted ``(data, masks [M, d]) -> outputs`` for one site (rule-independent)."""
    return jax.jit(lambda data, masks: jax.lax.map(lambda m: site_outputs(site, data, m),
                                                    masks))


def read_tasks(tasks: list[bb.Task], how: InferenceConfig | SVIConfig, key: jax.Array,
               top_k: tuple[int, ...], desc: str = "") -> dict:
    """AMDs of a task set in one basis and the metrics compared across bases.

    Per-task means are over informative tasks (task information ≥ 0.1 bit). Mean-field
    posteriors (SVI) have no total correlation (NaN).

    Returns:
      Plain values only (lists, floats, ints, strings), ready for results.json.
    """
    start = time.perf_counter()
    posts = infer_all(tasks, how, key, desc)
    seconds = time.perf_counter() - start
    summaries = [bb.metrics.summarize(p) for p in posts]
    info = np.array([m.task_information for m in summaries])
    keep = info >= INFORMATIVE_BITS
    d = tasks[0].num_units

    def mean_of(values):
        v = np.asarray(values, np.float64)[keep]
        return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")

    tc = [float("nan") if p.mean_field else m.total_correlation
          for p, m in zip(posts, summaries, strict=True)]
    out = {
        "num_units": d, "method": posts[0].method, "tasks": [t.name for t in tasks],
        "inference_seconds": seconds,
        "informative_tasks": int(keep.sum()),
        "task_information": info.tolist(),
        "distributedness": [m.distributedness for m in summaries],
        "effective_units": [m.effective_units for m in summaries],
        "total_correlation": tc,
        "unit_information": np.stack([m.unit_information for m in summaries]).tolist(),
        "unit_importance": np.stack([m.unit_importance for m in summaries]).tolist(),
        "distributedness_mean": mean_of([m.distributedness for m in summaries]),
        "effective_units_mean": mean_of([m.effective_units for m in summaries]),
        "total_correlation_mean": mean_of(tc),
        "task_information_mean": float(info.mean()),
    }
    ks = [k for k in top_k if k <= d]
    # Per task: the intact network, every unit ablated, then only the k most important units
    # kept.
    masks = np.zeros((len(tasks), 2 + len(ks), d), np.float32)
    masks[:, 0] = 1.0
    for j, m in enumerate(summaries):
        order = np.argsort(-m.unit_importance, kind="stable")
        for r, k in enumerate(ks):
            masks[j, 2 + r, order[:k]] = 1.0
    kept = p_correct_many(tasks, masks)
    out["p_correct_intact"] = kept[:, 0].tolist()
    out["p_correct_ablated"] = kept[:, 1].tolist()
    out["p_correct_ablated_mean"] = float(kept[:, 1].mean())
    kept = np.concatenate([kept[:, :1], kept[:, 2:]], axis=1)
    for r, k in enumerate(ks):
        out[f"top{k}_share"] = mean_of([top_k_share(m.unit_information, k) for m in summaries])
        out[f"top{k}_p_correct"] = mean_of(kept[:, 1 + r])
    if len(posts) > 1:
        out.update(_polysemanticity(posts))
    return out


def _polysemanticity(posts: list[bb.Posterior]) -> dict:
    """Effective tasks per unit (plain and information-weighted) and I(T; M_i)."""
    poly = bb.metrics.polysemanticity(posts)
    serving = np.isfinite(poly.effective_tasks)
    # Weighted by each unit's total information, so that units carrying next to nothing
    # (inference noise on a large site) count for next to nothing.
    weight = np.where(serving, poly.information.sum(0), 0.0)
    weighted = (float(np.sum(weight * np.nan_to_num(poly.effective_tasks)) / weight.sum())
                if weight.sum() > 0 else float("nan"))
    return {
        "effective_tasks": poly.effective_tasks.tolist(),
        "polysemanticity_mean": poly.mean,
        "polysemanticity_weighted": weighted,
        "units_serving_tasks": int(serving.sum()),
        "unit_task_mi_mean": float(poly.mutual_information.mean()),
    }


def compare_bases(tasks: list[bb.Task], bases: dict[str, bb.Basis | None],
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
