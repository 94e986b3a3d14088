"""Activation, inhibition and the token control: grafting or zeroing a prose PA template while
the prompt is read, and how often the continuations (cut at the model's end of turn) name the
concept, in each prompt format, with 95% intervals on every rate and difference."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bablate import llm, progress
from bablate.models import llama, llama_generate
from bablate.models.llama import LlamaConfig
from bablate.testbeds.llama import ConceptData, TurnEnd, neutral_questions

from .config import Interventions

# Sub-keys of the interventions key: the neutral questions' samples, then one per concept's
# inhibition prompts (OWN_KEY + concept index). Both formats share them.
NEUTRAL_KEY, OWN_KEY = 0, 1
# Rows per generation call: wider batches use the matrix units better (on 2 CPU cores a row
# of 48 tokens costs 0.72 s in batches of 8, 0.48 s of 30, 0.32 s of 160; benchmarks/
# llm_sampling.py), while the grafts' [layers, rows, positions, width] masks grow with it
# (quick's 210 neutral rows of 17 tokens: 0.25 GB each for the masks and the fills).
ROWS_PER_CALL = 256
# Arms whose prompts are at most this share shorter than the longest of a batch are padded
# to its length; shorter ones get their own batches.
MAX_PADDING = 0.25
ARMS = ("baseline", "activation", "token_control", "inhibition_baseline", "inhibition")
# The differences reported per concept and format (first arm − second).
CONTRASTS = (("activation", "baseline"), ("activation", "token_control"),
             ("inhibition", "inhibition_baseline"))
WRAPPED = re.compile(r"Q: ([^\n]*)\nA:$")


def mentions(text: str, words: Iterable[str]) -> bool:
    """Whether ``text`` names any of ``words`` (whole words, any case)."""
    return any(re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE) for w in words)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate k / n."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def rate(texts: list[str], words: Iterable[str]) -> dict:
    """The share of ``texts`` naming a word, with its 95% Wilson interval and count (rate and
    interval None when there are no texts)."""
    k, n = sum(mentions(x, words) for x in texts), len(texts)
    if not n:
        return {"rate": None, "lo": None, "hi": None, "n": 0}
    lo, hi = wilson(k, n)
    return {"rate": k / n, "lo": lo, "hi": hi, "n": n}


def difference(a: dict, b: dict) -> dict | None:
    """Rate a − rate b (entries of `rate`) with Newcombe's 95% hybrid score interval for two
    independent proportions (method 10 of Newcombe, Stat. Med. 17:873, 1998), built from their
    Wilson intervals; None where either has no samples. Arms that share prompts and keys are
    positively correlated, for which this interval is conservative."""
    if not a["n"] or not b["n"]:
        return None
    d = a["rate"] - b["rate"]
    return {"diff": d,
            "lo": d - float(np.hypot(a["rate"] - a["lo"], b["hi"] - b["rate"])),
            "hi": d + float(np.hypot(a["hi"] - a["rate"], b["rate"] - b["lo"]))}


def unwrap(text: str) -> str:
    """The bare question of a concept prompt: its last "Q: …\\nA:" without the wrapper or the
    few-shot lines before it; a prompt without the wrapper (a counting sequence) as it is."""
    m = WRAPPED.search(text)
    return m.group(1) if m else text


def formatted(fmt: str, question: str) -> str:
    """A neutral question in prompt format ``fmt`` ("authors": bare; "wrapped": Q/A)."""
    return question if fmt == "authors" else f"Q: {question}\nA:"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of the experiment: prompts, the key of their samples, and what is done to them
    while they are read.

    ``graft = {layer: (neuron_mask [D], values [D])}`` overwrites the residual stream entering
    each of those layers on the masked neurons, at the ``ic.positions`` prompt tokens before
    the last one (decoding runs unmodified); ``substitute`` instead types that token id at
    the same positions. Row j·samples + s (prompt j, sample s) samples with
    ``fold_in(key, j·samples + s)``: arms that share a key share every row's draws.
    """

    texts: tuple[str, ...]
    key: jax.Array
    samples: int = 1
    graft: dict | None = None
    substitute: int | None = None


def sample(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any, arms: dict[str, Arm],
           end: TurnEnd | None = None) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """Sampled continuations of every arm, ``samples`` per prompt, each cut at the model's end
    of turn (``end``; None: not cut), and the number of tokens each keeps.

    Each row samples with its own key, so its continuation does not depend on which rows
    share its batch: arms run together in batches of up to ``ROWS_PER_CALL`` rows (wider
    matrix products, fewer compiles). Arms of similar prompt length share a padded length
    (within ``MAX_PADDING``): the neutral questions are not padded to the length of the
    concepts' few-shot prompts, which would triple their prompt pass.
    """
    lengths = {name: max(len(tok.encode(x).ids) for x in arm.texts)
               for name, arm in arms.items()}
    groups: list[list[str]] = []
    for name in sorted(arms, key=lengths.__getitem__, reverse=True):
        if groups and lengths[name] >= (1 - MAX_PADDING) * lengths[groups[-1][0]]:
            groups[-1].append(name)
        else:
            groups.append([name])
    rows = {}
    for group in groups:
        rows.update(_sample_padded(ic, params, cfg, tok, {g: arms[g] for g in group},
                                   lengths[group[0]]))
    cut = {name: (llama_generate.cut_at_end(rows[name], end.end_id, end.reply_prefix) if end else
                  rows[name].tolist()) for name in arms}
    texts = {name: [tok.decode([int(i) for i in r]) for r in cut[name]] for name in arms}
    return texts, {name: [len(r) for r in cut[name]] for name in arms}


def _sample_padded(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any,
                   arms: dict[str, Arm], length: int) -> dict[str, np.ndarray]:
    """:func:`sample`'s new tokens [rows, ic.tokens] per arm, for arms whose prompts are all
    padded to ``length`` tokens."""
    t = length
    cols = slice(t - 1 - ic.positions, t - 1)
    token_rows: list[np.ndarray] = []
    valid_rows: list[np.ndarray] = []
    key_rows: list[jax.Array] = []
    arm_rows: list[np.ndarray] = []
    mask_arms: list[np.ndarray] = []
    fill_arms: list[np.ndarray] = []
    for a, arm in enumerate(arms.values()):
        prompts = llm.encode(tok, [x for x in arm.texts for _ in range(arm.samples)],
                             length=length)
        tok_a = np.array(prompts.tokens)
        if arm.substitute is not None:
            tok_a[:, cols] = arm.substitute
        token_rows.append(tok_a)
        valid_rows.append(np.asarray(prompts.valid))
        key_rows.append(jax.vmap(jax.random.fold_in, (None, 0))(arm.key, jnp.arange(len(tok_a))))
        arm_rows.append(np.full(len(tok_a), a))
        m = np.ones((cfg.num_layers, t, cfg.width), np.float32)
        f = np.zeros((cfg.num_layers, t, cfg.width), np.float32)
        for layer, (mask_d, values_d) in (arm.graft or {}).items():
            m[layer, cols] = 1.0 - mask_d
            f[layer, cols] = values_d * mask_d
        mask_arms.append(m)
        fill_arms.append(f)
    tokens, valid = np.concatenate(token_rows), np.concatenate(valid_rows)
    keys, arm_of_row = jnp.concatenate(key_rows), np.concatenate(arm_rows)
    masks, fills = np.stack(mask_arms, axis=1), np.stack(fill_arms, axis=1)  # [L, arms, T, D]
    n = len(tokens)
    # Equal batches (the last padded with repeats of row 0): one compile per length.
    size = -(-n // -(-n // ROWS_PER_CALL))
    rows = np.concatenate([np.arange(n), np.zeros(-n % size, int)])
    out = []
    for lo in progress.track(range(0, len(rows), size), desc=f"interventions ({t} tokens)",
                             unit="batch"):
        r = rows[lo:lo + size]
        iv = llama.Interventions(resid=jnp.asarray(masks[:, arm_of_row[r]]),
                                 resid_fill=jnp.asarray(fills[:, arm_of_row[r]]))
        out.append(np.asarray(llama_generate.generate(
            params, cfg, jnp.asarray(tokens[r]), jnp.asarray(valid[r]), keys[r],
            max_new=ic.tokens, temperature=ic.temperature, top_k=50, interventions=iv)))
    new = np.concatenate(out)[:n]
    starts = np.cumsum([0] + [len(a.texts) * a.samples for a in arms.values()])
    return {name: new[starts[a]:starts[a + 1]] for a, name in enumerate(arms)}


def graft_plan(ic: Interventions, templates: dict, name: str, width: int,
               min_neurons: int) -> tuple[dict | None, str | None]:
    """The graft of concept ``name``: ``{layer: (neuron_mask, values)}`` with the template of
    layer ``layer − ic.template_lag`` at every intervention layer, or None and why there is no
    template worth grafting (none built, or one keeping at most ``min_neurons`` of the
    ``width`` neurons somewhere: it would graft almost nothing)."""
    graft = {}
    for layer, source in zip(ic.layers, ic.template_layers, strict=True):
        tpl = templates.get((name, source))
        if tpl is None:
            return None, f"no prose template at layer {source}"
        if tpl.num_neurons <= min_neurons:
            return None, (f"its layer-{source} template keeps {tpl.num_neurons} of {width} "
                          f"neurons (at most {min_neurons}: it would graft almost nothing)")
        graft[layer] = (tpl.neuron_mask.astype(np.float32), tpl.mean.astype(np.float32))
    return graft, None


def interventions(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any,
                  data: list[ConceptData], templates: dict, key: jax.Array, *,
                  min_neurons: int, end: TurnEnd | None = None) -> dict:
    """Activation, its token-substitution control, and inhibition, per prompt format, as rates
    of continuations naming the concept (95% Wilson intervals) and differences between arms
    (95% Newcombe intervals).

    As the authors' code runs it: the residual stream entering each intervention layer l is
    overwritten on the neurons of the concept's template of layer l − ``ic.template_lag``
    (``templates[(concept, layer)]``, from prose) at the ``ic.positions`` prompt tokens before
    the last one, in the prompt pass only. Activation grafts the template into neutral
    questions; the control types the concept word at the same positions instead; inhibition
    zeroes the template's neurons in prompts the intact model completes with the concept.
    Every arm of a format uses the same sampler and keys; continuations are cut at ``end``.
    """
    layers = ic.layers
    if layers[-1] >= cfg.num_layers or ic.template_layers[0] < 0:
        raise ValueError(f"intervention layers {layers[0]}..{layers[-1]} with template lag "
                         f"{ic.template_lag} must lie in 0..{cfg.num_layers - 1}; lower "
                         "intervention_layer, intervention_num_layers or the lag.")
    questions = neutral_questions(ic.questions)
    own = {d.name: [d.texts[j] for j in np.resize(np.flatnonzero(d.correct), ic.own_rows)]
           if d.correct.any() else [] for d in data}
    k_neutral = jax.random.fold_in(key, NEUTRAL_KEY)
    grafts, why, words, control = {}, {}, {}, {}
    for d in data:
        grafts[d.name], why[d.name] = graft_plan(ic, templates, d.name, cfg.width, min_neurons)
        words[d.name] = sorted(set(d.targets))
        # The control types the concept's most frequent training word.
        control[d.name] = int(np.bincount(d.target_ids[~d.test]).argmax())
    arms = {}
    for fmt in ic.formats:
        neutral = tuple(formatted(fmt, q) for _, q in questions)
        arms[f"{fmt}/baseline"] = Arm(neutral, k_neutral, ic.samples)
        for i, d in enumerate(data):
            arms[f"{fmt}/{d.name}/token_control"] = Arm(neutral, k_neutral, ic.samples,
                                                        substitute=control[d.name])
            g = grafts[d.name]
            if g is None:
                continue
            arms[f"{fmt}/{d.name}/activation"] = Arm(neutral, k_neutral, ic.samples, graft=g)
            if own[d.name]:
                k_own = jax.random.fold_in(key, OWN_KEY + i)
                own_texts = tuple(own[d.name] if fmt == "wrapped" else map(unwrap, own[d.name]))
                zero = {layer: (m, np.zeros_like(m)) for layer, (m, _) in g.items()}
                arms[f"{fmt}/{d.name}/inhibition_baseline"] = Arm(own_texts, k_own)
                arms[f"{fmt}/{d.name}/inhibition"] = Arm(own_texts, k_own, graft=zero)
    every = [t for arm in arms.values() for t in arm.texts]
    if min(len(tok.encode(t).ids) for t in every) <= ic.positions:
        raise ValueError(f"every intervention prompt needs more than intervention_positions="
                         f"{ic.positions} tokens; lengthen the short prompts.")
    texts, kept = sample(ic, params, cfg, tok, arms, end)
    out = _summary(ic, data, texts, kept, words, control, grafts, why, tok,
                   [c for c, _ in questions], end)
    out["details"]["inhibition_prompts"] = {n: len(set(v)) for n, v in own.items()}
    return out


def _summary(ic: Interventions, data: list[ConceptData], texts: dict[str, list[str]],
             kept: dict[str, list[int]], words: dict, control: dict, grafts: dict, why: dict,
             tok: Any, categories: list[str], end: TurnEnd | None) -> dict:
    """The interventions' results: rates, differences, the format effect and the details."""
    def got(fmt: str, name: str, arm: str) -> list[str]:
        return texts.get(f"{fmt}/baseline" if arm == "baseline" else f"{fmt}/{name}/{arm}", [])

    rates = {fmt: {d.name: {arm: rate(got(fmt, d.name, arm), words[d.name]) for arm in ARMS}
                   for d in data} for fmt in ic.formats}
    diffs = {fmt: {n: {f"{a} - {b}": difference(r[a], r[b]) for a, b in CONTRASTS}
                   for n, r in by.items()} for fmt, by in rates.items()}
    first, *rest = ic.formats
    effect = {n: {arm: difference(rates[first][n][arm], rates[rest[0]][n][arm]) for arm in ARMS}
              for n in rates[first]} if rest else None
    ends = {fmt: [k for name, ks in kept.items() if name.startswith(f"{fmt}/") for k in ks]
            for fmt in ic.formats}
    examples = {fmt: {d.name: {arm: next(iter(got(fmt, d.name, arm)), None)
                               for arm in ("activation", "token_control", "inhibition")}
                      for d in data} for fmt in ic.formats}
    return {"rates": rates, "differences": diffs,
            "format_effect": {"formats": [first, rest[0]], "by_concept": effect} if rest else None,
            "details": {
                "layers": list(ic.layers), "template_layers": list(ic.template_layers),
                "positions": ic.positions, "tokens": ic.tokens, "formats": list(ic.formats),
                "num_questions": len(categories),
                "categories": {c: categories.count(c) for c in dict.fromkeys(categories)},
                "samples_per_question": ic.samples, "own_rows": ic.own_rows,
                "end_of_turn": None if end is None else tok.decode(
                    [end.end_id], skip_special_tokens=False),
                "reply_opening": None if end is None else tok.decode(
                    list(end.reply_prefix), skip_special_tokens=False),
                "ended_share": {fmt: float(np.mean(np.asarray(k) < ic.tokens)) if k else None
                                for fmt, k in ends.items()},
                "not_grafted": {n: w for n, w in why.items() if w},
                "template_neurons": {n: [int(m.sum()) for m, _ in g.values()]
                                     for n, g in grafts.items() if g},
                "control_word": {n: tok.decode([c]) for n, c in control.items()},
                "examples": examples}}
