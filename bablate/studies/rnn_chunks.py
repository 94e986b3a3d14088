"""RNN chunks: chunk discovery in hidden states, perturbation, grafting, and Bayesian ablation.

Reproduces the RNN part of Wu, Alaniz, Schulz, Akata, "Discovering Chunks in Neural Embeddings
for Interpretability" (arXiv 2502.01803) and reads the same networks with Bayesian ablation
(DESIGN.md §3). Steps of `run`:

1. Train the RNN on a sequence family for `compare_seeds` seeds; for each seed run DSC on the
   trained network and on the same network untrained (unique states, vocabulary, parse length,
   held-out decoding accuracy).
2. PA templates of every ground-truth chunk (state at the chunk's last symbol): TPR/FPR/AUC.
3. Perturbation: inject the DSC state decoded as symbol a as the hidden state and feed b (for
   every a, b, c consecutive inside a word): does the network predict c? Control: the state
   decoded as the filler 'E'.
4. Grafting (compositional family): continue training on the transfer sequence 'ABCDLMN' with
   and without writing the state decoded as 'J' into the hidden state after 'C', so that 'D' is
   read together with the state that, in 'JKLMN', is read with 'K' and predicts 'L'; learning
   curves over seeds of the one new transition (L after ABCD). Our reconstruction of the
   paper's grafting experiment; curves are measured without the graft unless labelled so.
5. Bayesian ablation: site = the hidden units, masked at every step; one task per chunk
   ("predict the continuation inside chunk k": top-1 next symbol at positions inside chunk k
   after its first symbol; optionally also the smooth rule, the mean probability of the correct
   symbol); exact AMD when hidden <= 16, MCMC otherwise. Agreement between DSC
   and the AMD (our reconstruction): per chunk, Spearman rank correlation over units between
   the AMD importance π_i and the mutual information between unit i's DSC cluster id and "this
   step is a task step of chunk k"; averaged over chunks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import stats

import bablate as bb
from bablate import chunks, sequences
from bablate import config_checks as cc
from bablate.models import rnn
from bablate.studies import rnn_plots

TEST_SEED_OFFSET = 1_000_003  # held-out sequences use seed + this offset
EVAL_WINDOWS = 30  # held-out windows for learning curves (a fixed count: one compile)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Typed settings of the study (see experiments/rnn_chunks.py for the meaning of each)."""

    family: str
    seed: int
    n_h: int
    n_draws: int
    model: rnn.RNNConfig
    train: rnn.TrainConfig
    compare_seeds: int
    dsc_k: int
    dsc_rounds: int
    dsc_top: int
    dsc_min_count: int
    dsc_max_tokens: int
    pa_tolerance: float
    perturbation: bool
    grafting: bool
    graft_seeds: int
    graft_steps: int
    graft_eval_every: int
    graft_chunk: int
    ablation: bool
    ablation_method: str
    ablation_rules: tuple[str, ...]
    ablation_windows: int
    ablation_window: int
    max_tasks: int
    min_examples: int
    mcmc_samples: int
    mcmc_warmup: int
    mcmc_chains: int
    mcmc_sampler: str
    mcmc_check_exact: bool
    # DSC protocols run ("long" and/or "authors", see bablate.chunks.dsc); the first one fills
    # the headline keys; PA, perturbation, grafting and ablation always read the long one.
    dsc_protocols: tuple[str, ...] = ("long",)
    dsc_authors_length: int = 2000
    dsc_authors_fit_steps: int = chunks.AUTHORS_FIT_STEPS


# Every field of experiments/rnn_chunks.py's config, checked before any work.
CONFIG_RULES = {
    "seed": cc.integer(0), "family": cc.one_of(*sequences.FAMILIES),
    "n_h": cc.integer(0), "n_draws": cc.integer(0),
    "model.cell": cc.one_of(*rnn.CELLS), "model.hidden": cc.integer(1),
    "train.steps": cc.integer(1), "train.window": cc.integer(2), "train.batch": cc.integer(1),
    "train.learning_rate": cc.number(0, low_open=True), "train.chunk": cc.integer(1),
    "train.eval_every": cc.integer(0), "compare_seeds": cc.integer(1),
    "dsc.k": cc.integer(1), "dsc.rounds": cc.integer(1), "dsc.top": cc.integer(1),
    "dsc.min_count": cc.integer(1), "dsc.max_tokens": cc.integer(1),
    "pa_tolerance": cc.number(0, low_open=True), "perturbation": cc.boolean(),
    "grafting.enabled": cc.boolean(), "grafting.seeds": cc.integer(1),
    "grafting.steps": cc.integer(1), "grafting.eval_every": cc.integer(1),
    "grafting.chunk": cc.integer(1),
    "ablation.enabled": cc.boolean(), "ablation.method": cc.one_of("auto", "exact", "mcmc"),
    "ablation.rules": cc.sequence(cc.one_of("top1", "smooth_top1"), min_len=1),
    "ablation.windows": cc.integer(1), "ablation.window": cc.integer(2),
    "ablation.max_tasks": cc.integer(1), "ablation.min_examples": cc.integer(1),
    "ablation.mcmc.num_samples": cc.integer(1), "ablation.mcmc.num_warmup": cc.integer(0),
    "ablation.mcmc.num_chains": cc.integer(1),
    "ablation.mcmc.sampler": cc.one_of("auto", "informed", "gradient", "stock"),
    "ablation.mcmc.check_exact": cc.boolean(),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    cc.require(not (config.ablation.enabled and config.ablation.method == "exact"
                    and config.model.hidden > 20),
               f"exact ablation needs model.hidden <= 20 (got {config.model.hidden}); set "
               "--config.ablation.method=auto or mcmc")
    cc.parses(from_config, config)


def from_config(config: ml_collections.ConfigDict) -> StudyConfig:
    """Reads the ConfigDict once, at the edge."""
    seq = make_sequence(config.family, 0, config.n_h, config.n_draws)
    model = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=config.model.hidden,
                          cell=config.model.cell)
    t = config.train
    train = rnn.TrainConfig(steps=t.steps, window=t.window, batch=t.batch,
                            learning_rate=t.learning_rate, chunk=t.chunk,
                            eval_every=t.eval_every)
    d, a, g = config.dsc, config.ablation, config.grafting
    return StudyConfig(
        family=config.family, seed=config.seed, n_h=config.n_h, n_draws=config.n_draws,
        model=model, train=train, compare_seeds=config.compare_seeds, dsc_k=d.k,
        dsc_rounds=d.rounds, dsc_top=d.top, dsc_min_count=d.min_count,
        dsc_max_tokens=d.max_tokens, pa_tolerance=config.pa_tolerance,
        perturbation=config.perturbation, grafting=g.enabled, graft_seeds=g.seeds,
        graft_steps=g.steps, graft_eval_every=g.eval_every, graft_chunk=g.chunk,
        ablation=a.enabled, ablation_method=a.method, ablation_rules=tuple(a.rules),
        ablation_windows=a.windows, ablation_window=a.window,
        max_tasks=a.max_tasks, min_examples=a.min_examples, mcmc_samples=a.mcmc.num_samples,
        mcmc_warmup=a.mcmc.num_warmup, mcmc_chains=a.mcmc.num_chains,
        mcmc_sampler=a.mcmc.sampler, mcmc_check_exact=a.mcmc.check_exact,
        dsc_protocols=dsc_protocols(d.get("protocol", "long")),
        dsc_authors_length=int(d.get("authors_length", 2000)),
        dsc_authors_fit_steps=int(d.get("authors_fit_steps", chunks.AUTHORS_FIT_STEPS)))


def dsc_protocols(protocol: str) -> tuple[str, ...]:
    """config.dsc.protocol → the protocols to run ("both" = long first, then authors)."""
    if protocol == "both":
        return chunks.PROTOCOLS
    if protocol not in chunks.PROTOCOLS:
        raise ValueError(f"dsc.protocol must be one of {chunks.PROTOCOLS} or 'both'; got "
                         f"{protocol!r}.")
    return (protocol,)


def make_sequence(family: str, seed: int, n_h: int = 0, n_draws: int = 0):
    """The family's sequence; n_draws = 0 keeps the paper's length."""
    kwargs = {}
    if family == "hierarchy":
        kwargs["n_h"] = n_h
    if n_draws:
        kwargs["n_repeats" if family == "reflection" else "n_draws"] = n_draws
    return sequences.generate(family, seed, **kwargs)


@dataclasses.dataclass(frozen=True)
class Windows:
    """A sequence cut into windows [W, L] (tokens, chunk ids, position in chunk)."""

    tokens: np.ndarray
    chunk_ids: np.ndarray
    chunk_pos: np.ndarray


def to_windows(seq, length: int, max_tokens: int | None = None) -> Windows:
    n = len(seq.tokens) if max_tokens is None else min(len(seq.tokens), max_tokens)
    cut = lambda a: rnn.windows(a[:n], length)
    return Windows(cut(seq.tokens), cut(seq.chunk_ids), cut(seq.chunk_pos))


# ------------------------------------------------------------------------------- DSC / PA


_unroll_windows = jax.jit(rnn.unroll_windows, static_argnums=0)


def hidden_states(cfg: StudyConfig, variables, w: Windows) -> np.ndarray:
    _, h = _unroll_windows(cfg.model, variables, w.tokens)
    return np.asarray(h).reshape(-1, cfg.model.hidden)


def dsc_summary(cfg: StudyConfig, variables, fit: Windows, test: Windows):
    h_fit, h_test = hidden_states(cfg, variables, fit), hidden_states(cfg, variables, test)
    res = chunks.run_dsc(h_fit, fit.tokens.ravel(), h_test, test.tokens.ravel(), k=cfg.dsc_k,
                         rounds=cfg.dsc_rounds, top=cfg.dsc_top, min_count=cfg.dsc_min_count)
    numbers = {"n_unique_states": res.n_unique_states, "vocab_size": res.chunks.vocab_size,
               "vocab_size_count_gt5": res.chunks.vocab_size_count_gt(5),
               "parse_length": res.chunks.parse_length,
               "decoding_accuracy": res.decoding_accuracy,
               "decoding_unseen_fraction": res.unseen_fraction}
    return res, numbers, h_fit, h_test


def dsc_authors_summary(cfg: StudyConfig, variables, seq):
    """DSC by the authors' protocol on one continuous trajectory of the sequence's first
    ``dsc_authors_length`` tokens (their notebooks: 2,000), from h_0 = 0."""
    n = min(cfg.dsc_authors_length, len(seq.tokens))
    tokens = np.asarray(seq.tokens[:n])
    _, h = _unroll_windows(cfg.model, variables, jnp.asarray(tokens[None, :], jnp.int32))
    h = np.asarray(h).reshape(-1, cfg.model.hidden)
    res = chunks.run_dsc_authors(h, tokens, k=cfg.dsc_k, rounds=cfg.dsc_rounds,
                                 top=cfg.dsc_top, min_count=cfg.dsc_min_count,
                                 fit_steps=min(cfg.dsc_authors_fit_steps, n - 1))
    numbers = {"n_unique_states": res.n_unique_states, "vocab_size": res.chunks.vocab_size,
               "vocab_size_count_gt5": res.chunks.vocab_size_count_gt(5),
               "parse_length": res.chunks.parse_length,
               "decoding_accuracy": res.decoding_accuracy,
               "decoding_unseen_fraction": res.unseen_fraction, "trajectory_length": n}
    return res, numbers, h


def initial_variables(cfg: StudyConfig, s: int):
    """The untrained network of seed s: exactly the start ``rnn.train`` trains from with
    ``jax.random.key(s)`` (it splits the key into (init, data))."""
    k_init, _ = jax.random.split(jax.random.key(s))
    return rnn.init(cfg.model, k_init)


def word_end_mask(w: Windows, words: tuple[str, ...], k: int) -> np.ndarray:
    """bool [W*L]: the step is the last symbol of an occurrence of word k."""
    return ((w.chunk_ids == k) & (w.chunk_pos == len(words[k]) - 1)).ravel()


def pa_chunks(cfg: StudyConfig, words, fit: Windows, test: Windows, h_fit, h_test,
              word_ids) -> dict:
    """PA template per chunk (state at its last symbol) → TPR/FPR at the threshold and AUC."""
    tol = cfg.pa_tolerance * float(np.std(h_fit))
    out = {}
    for k in word_ids:
        pos_fit, pos_test = word_end_mask(fit, words, k), word_end_mask(test, words, k)
        if pos_fit.sum() < 5 or pos_test.sum() < 1:
            continue
        try:
            tpl = chunks.pa_template(h_fit[pos_fit], tol)
        except ValueError:  # no neuron within tolerance: the chunk has no stable template
            out[words[k]] = {"num_neurons": 0}
            continue
        scores = chunks.pa_scores(tpl, h_test)
        tpr, fpr = chunks.detection_rates(scores <= tpl.threshold, pos_test)
        roc = chunks.tpr_fpr_auc(scores, pos_test)
        out[words[k]] = {"num_neurons": tpl.num_neurons, "tpr": tpr, "fpr": fpr,
                         "auc": roc.auc, "neuron_mask": tpl.neuron_mask.tolist()}
    return out


# ----------------------------------------------------------------------------- perturbation


def state_for_symbol(res: chunks.DSCResult, h_fit: np.ndarray, symbol: int) -> np.ndarray | None:
    """Hidden vector of the most frequent DSC state decoded as `symbol` (None if there is none)."""
    codes = res.discretizer.codes(h_fit)
    ids, states = chunks.state_ids(codes)
    counts = np.bincount(ids, minlength=len(states))
    for sid in np.argsort(-counts, kind="stable"):
        if res.lookup.table.get(states[sid]) == symbol:
            return res.discretizer.vector(np.asarray(states[sid]))
    return None


def perturbation(cfg: StudyConfig, variables, res, h_fit, seq) -> list[dict]:
    """Inject the state decoded as a, feed b; predicted vs expected c for every a b c in a word."""
    alpha = seq.alphabet
    control = state_for_symbol(res, h_fit, alpha.index(sequences.FILLER))
    run = jax.jit(lambda h0, x: rnn.unroll(cfg.model, variables, x, h0=h0)[0][0])
    out, seen = [], set()
    for word in seq.words:
        for a, b, c in zip(word, word[1:], word[2:], strict=False):
            if (a, b) in seen:
                continue
            seen.add((a, b))
            inj = state_for_symbol(res, h_fit, alpha.index(a))
            if inj is None or control is None:
                continue
            x = jnp.asarray([alpha.index(b)], jnp.int32)
            lp_inj = np.asarray(run(jnp.asarray(inj, jnp.float32), x))
            lp_ctl = np.asarray(run(jnp.asarray(control, jnp.float32), x))
            out.append({"inject": a, "feed": b, "expect": c,
                        "pred_injected": alpha[int(lp_inj.argmax())],
                        "p_expect_injected": float(np.exp(lp_inj[alpha.index(c)])),
                        "pred_control": alpha[int(lp_ctl.argmax())],
                        "p_expect_control": float(np.exp(lp_ctl[alpha.index(c)]))})
    return out


# --------------------------------------------------------------------------------- grafting


def grafting(cfg: StudyConfig, variables, res, h_fit, ctx) -> dict:
    """Transfer training on 'ABCDLMN' with and without grafting the 'J' state after 'C'."""
    alpha = sequences.COMPOSITIONAL_ALPHABET
    j_state = state_for_symbol(res, h_fit, alpha.index("J"))
    if j_state is None:
        return {}
    j_state = jnp.asarray(j_state, jnp.float32)
    c_id = alpha.index("C")  # 'C' occurs only inside 'ABCDLMN' in the transfer sequence

    def graft(window):
        return jnp.broadcast_to(j_state, window.shape + j_state.shape), window == c_id

    tc = dataclasses.replace(cfg.train, steps=cfg.graft_steps, eval_every=cfg.graft_eval_every,
                             chunk=cfg.graft_chunk)
    curves: dict[str, list] = {"none": [], "graft": [], "graft_eval_grafted": []}
    steps = None
    for i in range(cfg.graft_seeds):
        s = cfg.seed + i
        train_seq = sequences.transfer(s)
        test = to_windows(sequences.transfer(s + TEST_SEED_OFFSET), cfg.train.window)
        # The one new transition: 'L' after 'ABCD' ('LMN' continues as in 'JKLMN').
        mask = (test.chunk_pos[:EVAL_WINDOWS, 1:] == 4).astype(np.float32)
        for name, g in (("none", None), ("graft", graft)):
            _, hist = rnn.train(cfg.model, tc, train_seq.tokens, jax.random.key(s),
                                variables=variables, eval_windows=test.tokens[:EVAL_WINDOWS],
                                eval_mask=mask,
                                graft=g, eval_graft=g is not None,
                                desc=f"transfer {name} seed {s}")
            curves[name].append(hist["accuracy"])
            if g is not None:
                curves["graft_eval_grafted"].append(hist["accuracy_grafted"])
            steps = hist["step"]
    summary = {name: mean_ci(np.asarray(c)) for name, c in curves.items()}
    return {"step": steps, "curves": {k: np.asarray(v).tolist() for k, v in curves.items()},
            "summary": summary}


def mean_ci(x_SxN: np.ndarray) -> dict:
    """Mean and 95% t-interval half-width over the first axis (seeds)."""
    n = x_SxN.shape[0]
    mean = x_SxN.mean(0)
    half = (stats.t.ppf(0.975, n - 1) * x_SxN.std(0, ddof=1) / np.sqrt(n) if n > 1
            else np.zeros_like(mean))
    return {"mean": mean.tolist(), "ci95": np.asarray(half).tolist()}


# -------------------------------------------------------------------------- Bayesian ablation


def hidden_site(model: rnn.RNNConfig, variables) -> bb.Site:
    """In-place site: the hidden units, masked at every time step of every window."""

    def apply(inputs, ablate):
        logp, _ = rnn.unroll_windows(model, variables, inputs["windows"], ablate=ablate)
        return logp[inputs["w"], inputs["t"]]

    return bb.Site.in_place("hidden", model.hidden, apply)


RULES = {"top1": bb.rules.top1, "smooth_top1": bb.rules.smooth_top1}


def chunk_tasks(site: bb.Site, w: Windows, words, word_ids, min_examples: int,
                rule: str = "top1") -> list[bb.Task]:
    """One task per chunk: predict x_{t+1} where t+1 is inside the chunk after its first symbol.

    `rule` "top1" counts top-1 hits; "smooth_top1" uses the mean probability of the correct
    symbol, which also sees a unit that only sharpens an already correct prediction.
    """
    if rule not in RULES:
        raise ValueError(f"unknown ablation rule {rule!r}; choose one of {tuple(RULES)}.")
    tasks = []
    nxt_id, nxt_pos = w.chunk_ids[:, 1:], w.chunk_pos[:, 1:]
    for k in word_ids:
        wi, ti = np.nonzero((nxt_id == k) & (nxt_pos >= 1))
        if len(wi) < min_examples:
            continue
        inputs = {"windows": jnp.asarray(w.tokens, jnp.int32), "w": jnp.asarray(wi, jnp.int32),
                  "t": jnp.asarray(ti, jnp.int32)}
        targets = w.tokens[wi, ti + 1]
        tasks.append(bb.Task.build(site, inputs, RULES[rule](targets), name=words[k],
                                   check_intact=True))
    return tasks


def task_steps(w: Windows, k: int) -> np.ndarray:
    """bool [W*L]: steps t whose next symbol is a task target of chunk k."""
    m = np.zeros_like(w.tokens, dtype=bool)
    m[:, :-1] = (w.chunk_ids[:, 1:] == k) & (w.chunk_pos[:, 1:] >= 1)
    return m.ravel()


def infer(cfg: StudyConfig, task: bb.Task, key, method: str) -> bb.Posterior:
    if method == "exact":
        return bb.infer(task, method="exact")
    return bb.infer(task, method="mcmc", key=key, sampler=cfg.mcmc_sampler,
                    num_samples=cfg.mcmc_samples, num_warmup=cfg.mcmc_warmup,
                    num_chains=cfg.mcmc_chains)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either input is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def ablation(cfg: StudyConfig, variables, seq, res, h_fit, fit: Windows, word_ids,
             rule: str = "top1") -> dict:
    """AMD per chunk task (correctness `rule`), metrics, and agreement with DSC."""
    test_seq = make_sequence(cfg.family, cfg.seed + 2 * TEST_SEED_OFFSET, cfg.n_h, cfg.n_draws)
    w = to_windows(test_seq, cfg.ablation_window,
                   cfg.ablation_windows * cfg.ablation_window)
    site = hidden_site(cfg.model, variables)
    tasks = chunk_tasks(site, w, seq.words, word_ids, cfg.min_examples,
                        rule)[: cfg.max_tasks]
    if not tasks:
        return {}
    method = cfg.ablation_method
    if method == "auto":
        method = "exact" if cfg.model.hidden <= 16 else "mcmc"
    key = jax.random.key(cfg.seed)
    posts = [infer(cfg, t, jax.random.fold_in(key, i), method) for i, t in enumerate(tasks)]
    summaries = [bb.metrics.summarize(p) for p in posts]
    codes = res.discretizer.codes(h_fit)
    agreement, overlap = [], []
    for t, m in zip(tasks, summaries, strict=True):
        k = seq.words.index(t.name)
        info = chunks.unit_chunk_information(codes, task_steps(fit, k))
        agreement.append(spearman(info, m.unit_importance))
        top = max(1, cfg.model.hidden // 4)
        overlap.append(len(set(np.argsort(-info)[:top]) & set(np.argsort(-m.unit_importance)
                                                               [:top])) / top)
    out = {"method": method, "rule": rule, "tasks": [t.name for t in tasks],
           "num_examples": [int(t.data["inputs"]["w"].shape[0]) for t in tasks],
           "intact_p_correct": [float(t.p_correct(np.ones((1, t.num_units)))[0])
                                for t in tasks],
           "unit_importance": np.stack([m.unit_importance for m in summaries]).tolist(),
           "unit_information": np.stack([m.unit_information for m in summaries]).tolist(),
           "distributedness": [m.distributedness for m in summaries],
           "effective_units": [m.effective_units for m in summaries],
           "total_correlation": [m.total_correlation for m in summaries],
           "entropy_estimate": [m.entropy_estimate for m in summaries],
           "task_information": [m.task_information for m in summaries],
           "agreement_per_chunk": agreement, "top_quarter_overlap": overlap,
           "diagnostics": [{k: v for k, v in p.diagnostics.items()
                            if isinstance(v, int | float)} for p in posts]}
    if len(posts) > 1:
        poly = bb.metrics.polysemanticity(posts)
        out["polysemanticity"] = poly.effective_tasks.tolist()
        out["polysemanticity_mean"] = poly.mean
        out["mutual_information"] = poly.mutual_information.tolist()
    if method == "mcmc" and cfg.mcmc_check_exact and cfg.model.hidden <= 16:
        exact = bb.infer(tasks[0], method="exact")
        out["mcmc_vs_exact_max_abs_diff"] = float(np.max(np.abs(exact.marginals
                                                                - posts[0].marginals)))
    return out


def pa_agreement(abl: dict, pa: dict) -> float:
    """Mean over chunks of (mean π on the PA template's neurons − mean π on the other neurons).

    Our reconstruction of "do the units PA ties to a chunk matter for it": > 0 when the
    template's neurons are the more important ones; NaN when no chunk has a usable template.
    """
    diffs = []
    for name, imp in zip(abl["tasks"], abl["unit_importance"], strict=True):
        mask = np.asarray(pa.get(name, {}).get("neuron_mask", []), bool)
        if mask.size and mask.any() and not mask.all():
            imp = np.asarray(imp)
            diffs.append(float(imp[mask].mean() - imp[~mask].mean()))
    return float(np.mean(diffs)) if diffs else float("nan")


# ------------------------------------------------------------------------------------- run


def _nanmean(x) -> float:
    """Mean over finite values; NaN (null in results.json) when there are none."""
    x = np.asarray(x, np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def train_or_load(cfg: StudyConfig, s: int, seq, test: Windows, ctx):
    """Trains the network of seed s (or loads its checkpoint) → (variables, history)."""
    saved = ctx.load_state(f"net_seed{s}")
    if saved is not None:
        return jax.tree.map(jnp.asarray, saved["variables"]), saved["history"]
    variables, hist = rnn.train(cfg.model, cfg.train, seq.tokens, jax.random.key(s),
                                eval_windows=test.tokens[:EVAL_WINDOWS],
                                desc=f"train seed {s}")
    ctx.save_state(f"net_seed{s}", {"variables": variables, "history": hist})
    return variables, hist


def run(config: ml_collections.ConfigDict, ctx) -> dict:
    """Runs the study (see the module docstring) and returns results.json's numbers."""
    cfg = from_config(config)
    ctx.log(f"family {cfg.family}, cell {cfg.model.cell}, hidden {cfg.model.hidden}, "
            f"{cfg.compare_seeds} seeds")
    rows_by = {p: {"trained": [], "untrained": []} for p in cfg.dsc_protocols}
    primary = cfg.dsc_protocols[0]
    rows = rows_by[primary]
    histories, main = [], None
    for i in range(cfg.compare_seeds):
        s = cfg.seed + i
        seq = make_sequence(cfg.family, s, cfg.n_h, cfg.n_draws)
        test_seq = make_sequence(cfg.family, s + TEST_SEED_OFFSET, cfg.n_h, cfg.n_draws)
        fit = to_windows(seq, cfg.train.window, cfg.dsc_max_tokens)
        test = to_windows(test_seq, cfg.train.window, cfg.dsc_max_tokens)
        variables, hist = train_or_load(cfg, s, seq, test, ctx)
        histories.append(hist)
        untrained = initial_variables(cfg, s)
        for name, v in (("trained", variables), ("untrained", untrained)):
            acc = rnn.accuracy(cfg.model, v, test.tokens)
            for protocol in cfg.dsc_protocols:
                if protocol == "long":
                    res, numbers, h_fit, h_test = dsc_summary(cfg, v, fit, test)
                else:
                    res, numbers, h_fit = dsc_authors_summary(cfg, v, seq)
                    h_test = None
                numbers["accuracy"] = acc
                rows_by[protocol][name].append(numbers)
                if i == 0 and protocol == "long":
                    main = main or {}
                    main[name] = (res, h_fit, h_test)
        if i == 0:
            main = main or {}
            if "trained" not in main:  # PA, perturbation and ablation read the long trajectory
                res, _, h_fit, h_test = dsc_summary(cfg, variables, fit, test)
                main["trained"] = (res, h_fit, h_test)
            main.update(seq=seq, fit=fit, test=test, variables=variables)
        ctx.log(f"seed {s}: accuracy {rows['trained'][-1]['accuracy']:.3f}, unique states "
                f"{rows['trained'][-1]['n_unique_states']} vs "
                f"{rows['untrained'][-1]['n_unique_states']} untrained")

    seq, fit, test, variables = main["seq"], main["fit"], main["test"], main["variables"]
    res, h_fit, h_test = main["trained"]
    keys = ("n_unique_states", "vocab_size", "vocab_size_count_gt5", "parse_length",
            "decoding_accuracy", "decoding_unseen_fraction", "accuracy")
    results = {k: {n: _mean(rows[n], k) for n in rows} for k in keys}
    results["per_seed"] = rows
    results["dsc_primary_protocol"] = primary
    results["dsc"] = {p: {n: {**{k: _mean(rs[n], k) for k in keys},
                              "per_seed": {k: [r[k] for r in rs[n]] for k in keys}}
                          for n in rs}
                      for p, rs in rows_by.items()}
    results["accuracy"] = results["accuracy"]["trained"]
    results["accuracy_untrained"] = _mean(rows["untrained"], "accuracy")
    results["ground_truth_parse_length"] = int(
        (fit.chunk_pos.ravel() == 0).sum())
    word_ids = [k for k, wd in enumerate(seq.words) if len(wd) >= 2]
    results["pa"] = pa_chunks(cfg, seq.words, fit, test, h_fit, h_test, word_ids)

    rnn_plots.training_curves(ctx, histories)
    rnn_plots.dsc_comparison(ctx, rows_by, cfg.family)
    rnn_plots.chunk_dictionary(ctx, res, seq.alphabet)
    results["top_chunks"] = rnn_plots.top_chunks(res, seq.alphabet, 15)

    if cfg.perturbation:
        pert = perturbation(cfg, variables, res, h_fit, seq)
        results["perturbation"] = pert
        if pert:
            results["perturbation_success"] = float(np.mean(
                [p["pred_injected"] == p["expect"] for p in pert]))
            results["perturbation_control_success"] = float(np.mean(
                [p["pred_control"] == p["expect"] for p in pert]))
            rnn_plots.perturbation(ctx, pert)
    if cfg.grafting and cfg.family == "compositional":
        graft = grafting(cfg, variables, res, h_fit, ctx)
        results["grafting"] = graft
        if graft:
            rnn_plots.grafting(ctx, graft)
    for i, rule in enumerate(cfg.ablation_rules if cfg.ablation else ()):
        # The first rule fills the headline keys; others get a suffix (e.g. _smooth_top1).
        sfx = "" if i == 0 else f"_{rule}"
        abl = ablation(cfg, variables, seq, res, h_fit, fit, word_ids, rule)
        results["ablation" + sfx] = abl
        if abl:
            results["unit_importance" + sfx] = abl["unit_importance"]
            results["distributedness_mean" + sfx] = _nanmean(abl["distributedness"])
            results["total_correlation_mean" + sfx] = float(np.mean(abl["total_correlation"]))
            results["polysemanticity_mean" + sfx] = abl.get("polysemanticity_mean", 1.0)
            results["ablation_chunk_agreement" + sfx] = _nanmean(abl["agreement_per_chunk"])
            results["ablation_informative" + sfx] = max(abl["task_information"]) >= 0.1
            results["ablation_chunk_agreement_pa" + sfx] = pa_agreement(abl, results["pa"])
            rnn_plots.unit_importance(ctx, abl, "unit_importance" + sfx)
    rnn_plots.report_text(ctx, cfg, results)
    return results
