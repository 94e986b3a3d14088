"""The metrics of one task's AMD (:func:`summarize`), of several tasks on one site
(:func:`polysemanticity`, Jensen–Shannon overlap) and of a task set (:func:`summarize_tasks`);
see :mod:`bablate.metrics` for the definitions."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bablate.inference.posterior import Posterior
from bablate.metrics._entropy import bernoulli_entropy, bernoulli_kl, entropy_of, spread

INFORMATION = ("used", "all")


def split_information(q: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL(q_i ‖ prior_i) in bits split into (used: q_i > prior_i, harmful: q_i < prior_i)."""
    q, prior = np.asarray(q, np.float64), np.asarray(prior, np.float64)
    info = np.asarray(bernoulli_kl(jnp.asarray(q, jnp.float32), jnp.asarray(prior, jnp.float32)),
                      np.float64)
    used = q > prior
    return np.where(used, info, 0.0), np.where(q < prior, info, 0.0)


def _check_information(information: str) -> None:
    if information not in INFORMATION:
        raise ValueError(f"unknown information={information!r}; choose one of {INFORMATION} "
                         "('used' counts only units the task uses, q > prior).")


@dataclasses.dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one task's AMD (bits). See the module docstring for definitions.

    Attributes:
      unit_information: ``[d]`` KL(q_i ‖ prior_i), used + harmful.
      unit_information_used / unit_information_harmful: its parts from q_i > prior_i and
        q_i < prior_i.
      distributedness, effective_units: of ``information`` ("used" by default, or "all").
      entropy_estimate: how H(q) was obtained ("exact", "mean-field", "normaliser ratio",
        "chow-liu bound"); ``entropy_error`` a size for its error in bits (NaN: a bound).
    """

    task: str
    unit_importance: np.ndarray
    unit_information: np.ndarray
    task_information: float
    distributedness: float
    effective_units: float
    total_correlation: float
    entropy: float
    entropy_estimate: str
    unit_information_used: np.ndarray
    unit_information_harmful: np.ndarray
    information: str = "used"
    entropy_error: float = 0.0

    @property
    def used_information(self) -> float:
        """Σ_i of the used part of the unit information (bits)."""
        return float(np.sum(self.unit_information_used))

    @property
    def harmful_information(self) -> float:
        """Σ_i of the harmful part of the unit information (bits)."""
        return float(np.sum(self.unit_information_harmful))

    def as_dict(self) -> dict:
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
               for k, v in dataclasses.asdict(self).items()}
        out["used_information"] = self.used_information
        out["harmful_information"] = self.harmful_information
        return out

    def __repr__(self) -> str:
        return (f"TaskMetrics({self.task!r}: information {self.task_information:.3g} bits "
                f"(used {self.used_information:.3g}, harmful {self.harmful_information:.3g}), "
                f"distributedness {self.distributedness:.3g} ({self.information}), "
                f"TC {self.total_correlation:.3g} [{self.entropy_estimate}], "
                f"d={self.unit_importance.size})")


def distributedness(unit_information: np.ndarray) -> tuple[float, float]:
    """(distributedness ∈ [1/d, 1], effective units exp(H(w))); NaN when Σ I = 0."""
    info = jnp.asarray(unit_information, jnp.float32)
    eff, total = spread(info)
    if float(total) <= 0:
        return float("nan"), float("nan")
    return float(eff) / info.shape[-1], float(eff)


def summarize(post: Posterior, information: str = "used") -> TaskMetrics:
    """All single-task metrics of a posterior.

    Args:
      post: the posterior.
      information: "used" (default): distributedness is computed on the information of units
        the task uses (q_i > prior_i); "all": on every unit's KL, harmful units included.
    """
    _check_information(information)
    p = jnp.asarray(post.prior, jnp.float32)
    used, harmful = split_information(post.marginals, post.prior)
    info = used + harmful
    h, how, err, q_of_h = entropy_of(post)
    # TC and task information take H(q) and the marginals from one estimate (for MCMC draws
    # the reweighted ones), so that the two errors do not add up.
    q_h = jnp.asarray(q_of_h, jnp.float32)
    h_marg = float(bernoulli_entropy(q_h).sum())
    # KL(q‖prior) = −H(q) − E_q log prior(m), and the prior factorises over units.
    cross = -float((q_h * jnp.log2(p) + (1 - q_h) * jnp.log2(1 - p)).sum())
    dist_, eff = distributedness(used if information == "used" else info)
    return TaskMetrics(task=post.task, unit_importance=np.asarray(post.marginals, np.float64),
                       unit_information=info, task_information=max(cross - h, 0.0),
                       distributedness=dist_, effective_units=eff,
                       total_correlation=max(h_marg - h, 0.0), entropy=h, entropy_estimate=how,
                       unit_information_used=used, unit_information_harmful=harmful,
                       information=information, entropy_error=err)


def _check_same_site(posts: list[Posterior], what: str) -> None:
    """Refuses an empty list, or posteriors over different sites (by d and site identity)."""
    if not posts:
        raise ValueError(f"{what} needs at least one posterior, got an empty list.")
    sites = {(p.num_units, p.site) for p in posts}
    if len(sites) != 1:
        names = sorted({f"{p.site or '?'} [d={p.num_units}]" for p in posts})
        raise ValueError(f"{what} needs posteriors over one site; got {', '.join(names)}. "
                         "Compare tasks on the same site (same name, units, ablation, basis).")


@dataclasses.dataclass(frozen=True)
class Polysemanticity:
    """Per-unit polysemanticity over a task set.

    Attributes:
      tasks: task names.
      information: ``[T, d]`` I_i(t) in bits (the used part, or all of it; see
        :func:`polysemanticity`).
      effective_tasks: ``[d]`` exp(H(I_i(t)/Σ_t I_i(t))) ∈ [1, T]; NaN for units carrying less
        than ``min_information`` bits in total (they serve no task).
      mutual_information: ``[d]`` I(T; M_i) in bits under the uniform mixture of task AMDs.
    """

    tasks: list
    information: np.ndarray
    effective_tasks: np.ndarray
    mutual_information: np.ndarray

    @property
    def mean(self) -> float:
        """Mean effective number of tasks over units that serve any task (NaN if none)."""
        vals = self.effective_tasks[np.isfinite(self.effective_tasks)]
        return float(vals.mean()) if vals.size else float("nan")

    def __repr__(self) -> str:
        return (f"Polysemanticity({len(self.tasks)} tasks, d={self.effective_tasks.size}: "
                f"mean {self.mean:.3g} effective tasks per unit)")


def polysemanticity(posts: list[Posterior], min_information: float = 1e-3,
                    information: str = "used") -> Polysemanticity:
    """Polysemanticity of each unit across the tasks of ``posts`` (same site).

    Args:
      posts: one posterior per task, all over one site.
      min_information: units with less total information are left out (NaN).
      information: "used" (default): a unit serves a task by the information from q > prior
        (the task uses it); "all": its whole KL, harmful information included.
    """
    _check_information(information)
    _check_same_site(posts, "polysemanticity")
    q = jnp.asarray(np.stack([p.marginals for p in posts]), jnp.float32)
    used, harmful = zip(*[split_information(p.marginals, p.prior) for p in posts], strict=True)
    info = np.stack(used) if information == "used" else np.stack(used) + np.stack(harmful)
    eff, total = spread(jnp.asarray(info.T, jnp.float32))
    eff = np.where(np.asarray(total) >= min_information, np.asarray(eff), np.nan)
    mi = bernoulli_entropy(q.mean(0)) - bernoulli_entropy(q).mean(0)
    return Polysemanticity(tasks=[p.task for p in posts], information=info,
                           effective_tasks=eff, mutual_information=np.maximum(np.asarray(mi), 0))


def _js_bits(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    kl = lambda a: float(np.sum(np.where(a > 0, a * (np.log2(a) - np.log2(m)), 0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 · log 0 is masked out
        return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def js_divergence(a: Posterior, b: Posterior) -> float:
    """Jensen–Shannon divergence (bits, ∈ [0, 1]) between two task AMDs on the same site: the
    JS of the full mask distributions, which needs exact tables.

    For sampled posteriors use :func:`marginal_js_divergence`, a different (smaller) quantity.
    """
    _check_same_site([a, b], "js_divergence")
    if a.log_probs is None or b.log_probs is None:
        raise ValueError(f"js_divergence is the JS of the whole mask distributions and needs "
                         f"exact posteriors; {a.task!r} ({a.method}) and {b.task!r} ({b.method})"
                         " are not both exact. Use bablate.metrics.marginal_js_divergence (mean "
                         "over units of the JS between marginals) for sampled posteriors.")
    return _js_bits(a.probs(), b.probs())


def marginal_js_divergence(a: Posterior, b: Posterior) -> float:
    """Mean over units of the JS divergence (bits) between the two tasks' marginals q_i.

    Defined for any posteriors. It ignores the correlations between units, so it is a
    different quantity from the joint :func:`js_divergence` (often an order of magnitude
    smaller) and goes by its own name.
    """
    _check_same_site([a, b], "marginal_js_divergence")
    vals = [_js_bits(np.array([1 - x, x]), np.array([1 - y, y]))
            for x, y in zip(a.marginals, b.marginals, strict=True)]
    return float(np.mean(vals))


def _pairwise(posts: list[Posterior], fn, what: str) -> np.ndarray:
    _check_same_site(posts, what)
    n = len(posts)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = fn(posts[i], posts[j])
    return out


def js_matrix(posts: list[Posterior]) -> np.ndarray:
    """``[T, T]`` task-overlap matrix of joint JS divergences (bits; exact posteriors)."""
    return _pairwise(posts, js_divergence, "js_matrix")


def marginal_js_matrix(posts: list[Posterior]) -> np.ndarray:
    """``[T, T]`` matrix of :func:`marginal_js_divergence` (bits; any posteriors)."""
    return _pairwise(posts, marginal_js_divergence, "marginal_js_matrix")


# ---- a task set read as a whole -------------------------------------------------------------

INFORMATIVE_BITS = 0.1  # tasks carrying less task information are left out of per-task means


def informative_mean(values: ArrayLike, informative: np.ndarray) -> float:
    """Mean of ``values`` ``[T]`` over the informative tasks, NaNs skipped; NaN when no task
    is informative or every informative value is NaN."""
    v = np.asarray(values, np.float64)[np.asarray(informative, bool)]
    return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")


@dataclasses.dataclass(frozen=True)
class TaskSetMetrics:
    """The metrics of a task set on one site, per task and over the set (bits).

    Per task (``[T]``, or ``[T, d]``): the :class:`TaskMetrics` fields of each posterior, with
    ``total_correlation`` NaN for mean-field posteriors (their TC is 0 by construction, not
    measured). ``informative`` marks the tasks carrying at least ``informative_bits`` of task
    information; the ``*_mean`` fields average over those (NaN when none is), except
    ``task_information_mean``, the mean over every task.

    Polysemanticity (two tasks or more, else None): ``effective_tasks`` ``[d]`` and its
    ``polysemanticity_mean`` (:func:`polysemanticity`), ``polysemanticity_weighted`` (weighted
    by each unit's total information, so that units carrying next to nothing count for next to
    nothing), ``units_serving_tasks`` (units with a finite effective number), ``unit_task_mi``
    ``[d]`` I(T; M_i) and its mean, and ``tasks_served`` ``[d]``: for how many tasks each unit
    carries at least ``informative_bits`` (with its mean over units).
    """

    tasks: list[str]
    methods: list[str]
    informative_bits: float
    task_information: np.ndarray
    distributedness: np.ndarray
    effective_units: np.ndarray
    total_correlation: np.ndarray
    entropy_estimate: list[str]
    unit_information: np.ndarray
    unit_importance: np.ndarray
    informative: np.ndarray
    informative_tasks: int
    task_information_mean: float
    distributedness_mean: float
    effective_units_mean: float
    total_correlation_mean: float
    effective_tasks: np.ndarray | None = None
    polysemanticity_mean: float | None = None
    polysemanticity_weighted: float | None = None
    units_serving_tasks: int | None = None
    unit_task_mi: np.ndarray | None = None
    unit_task_mi_mean: float | None = None
    tasks_served: np.ndarray | None = None
    tasks_served_mean: float | None = None

    def mean(self, values: ArrayLike) -> float:
        """Mean of per-task ``values`` ``[T]`` over this set's informative tasks
        (:func:`informative_mean`), e.g. a study's own per-task numbers."""
        return informative_mean(values, self.informative)

    def as_dict(self) -> dict:
        """Plain JSON-ready values: lists, floats, ints, strings (NaN stays a float NaN; the
        run's JSON writer stores it as null)."""
        out = {}
        for field in dataclasses.fields(self):
            v = getattr(self, field.name)
            out[field.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    def __repr__(self) -> str:
        poly = ("" if self.polysemanticity_mean is None
                else f", {self.polysemanticity_mean:.3g} effective tasks per unit")
        return (f"TaskSetMetrics({len(self.tasks)} tasks, {self.informative_tasks} informative "
                f"(≥ {self.informative_bits:g} bit): distributedness "
                f"{self.distributedness_mean:.3g}, TC {self.total_correlation_mean:.3g}{poly})")


def summarize_tasks(posts: list[Posterior], informative_bits: float = INFORMATIVE_BITS,
                    information: str = "used") -> TaskSetMetrics:
    """Reads a task set: :func:`summarize` per task, means over the informative tasks and, for
    two tasks or more, polysemanticity (see :class:`TaskSetMetrics`).

    Args:
      posts: one posterior per task, all over one site.
      informative_bits: tasks with less task information are left out of the means; a unit
        serves a task (``tasks_served``) when it carries at least this much for it.
      information: "used" (default) or "all", as in :func:`summarize`.
    """
    _check_same_site(posts, "summarize_tasks")
    summaries = [summarize(p, information) for p in posts]
    info = np.array([m.task_information for m in summaries])
    keep = info >= informative_bits
    tc = np.array([float("nan") if p.mean_field else m.total_correlation
                   for p, m in zip(posts, summaries, strict=True)])
    dist_ = np.array([m.distributedness for m in summaries])
    eff = np.array([m.effective_units for m in summaries])
    summary = TaskSetMetrics(
        tasks=[p.task for p in posts], methods=[p.method for p in posts],
        informative_bits=float(informative_bits), task_information=info,
        distributedness=dist_, effective_units=eff, total_correlation=tc,
        entropy_estimate=[m.entropy_estimate for m in summaries],
        unit_information=np.stack([m.unit_information for m in summaries]),
        unit_importance=np.stack([m.unit_importance for m in summaries]),
        informative=keep, informative_tasks=int(keep.sum()),
        task_information_mean=float(info.mean()),
        distributedness_mean=informative_mean(dist_, keep),
        effective_units_mean=informative_mean(eff, keep),
        total_correlation_mean=informative_mean(tc, keep))
    if len(posts) == 1:
        return summary
    poly = polysemanticity(posts, information=information)
    serving = np.isfinite(poly.effective_tasks)
    weight = np.where(serving, poly.information.sum(0), 0.0)
    weighted = (float(np.sum(weight * np.nan_to_num(poly.effective_tasks)) / weight.sum())
                if weight.sum() > 0 else float("nan"))
    served = (poly.information >= informative_bits).sum(axis=0)
    return dataclasses.replace(
        summary, effective_tasks=poly.effective_tasks, polysemanticity_mean=poly.mean,
        polysemanticity_weighted=weighted, units_serving_tasks=int(serving.sum()),
        unit_task_mi=poly.mutual_information,
        unit_task_mi_mean=float(poly.mutual_information.mean()), tasks_served=served,
        tasks_served_mean=float(served.mean()))
