"""Activation, inhibition and the token control: grafting or zeroing a PA template while the
prompt is read, and how often the sampled continuations name the concept."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bablate import llm, progress
from bablate.models import llama
from bablate.models.llama import LlamaConfig
from bablate.testbeds.llama import ConceptData

from .config import Interventions

# Sub-keys of the interventions key: the neutral prompts' samples, then one per concept's
# inhibition prompts (OWN_KEY + concept index).
NEUTRAL_KEY, OWN_KEY = 0, 1
# Rows per generation call: wider batches use the matrix units better (on 2 CPU cores a row
# of 48 tokens costs 0.72 s in batches of 8, 0.48 s of 30, 0.32 s of 160; benchmarks/
# llm_sampling.py), while the grafts' [layers, rows, positions, width] masks grow with it
# (quick's 210 neutral rows of 17 tokens: 0.25 GB each for the masks and the fills).
ROWS_PER_CALL = 256
# Arms whose prompts are at most this share shorter than the longest of a batch are padded
# to its length; shorter ones get their own batches.
MAX_PADDING = 0.25


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
    """The share of ``texts`` naming a word, with its 95% Wilson interval and count."""
    k, n = sum(mentions(x, words) for x in texts), len(texts)
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else float("nan"), "lo": lo, "hi": hi, "n": n}


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


def sample(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any,
           arms: dict[str, Arm]) -> dict[str, list[str]]:
    """Sampled continuations of every arm, ``samples`` per prompt.

    Each row samples with its own key, so its continuation does not depend on which rows
    share its batch: arms run together in batches of up to ``ROWS_PER_CALL`` rows (wider
    matrix products, fewer compiles). Arms of similar prompt length share a padded length
    (within ``MAX_PADDING``): the neutral questions are not padded to the length of the
    concepts' few-shot prompts, which would triple their prompt pass.
    """
    lengths = {name: max(len(tok.encode(x).ids) for x in arm.texts)
               for name, arm in arms.items()}
    groups: list[list[str]] = []
    for name in sorted(arms, key=lengths.get, reverse=True):
        if groups and lengths[name] >= (1 - MAX_PADDING) * lengths[groups[-1][0]]:
            groups[-1].append(name)
        else:
            groups.append([name])
    texts = {}
    for group in groups:
        texts.update(_sample_padded(ic, params, cfg, tok, {g: arms[g] for g in group},
                                    lengths[group[0]]))
    return {name: texts[name] for name in arms}


def _sample_padded(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any,
                   arms: dict[str, Arm], length: int) -> dict[str, list[str]]:
    """:func:`sample` for arms whose prompts are all padded to ``length`` tokens."""
    t = length
    cols = slice(t - 1 - ic.positions, t - 1)
    tokens, valid, keys, arm_of_row, masks, fills = [], [], [], [], [], []
    for a, arm in enumerate(arms.values()):
        prompts = llm.encode(tok, [x for x in arm.texts for _ in range(arm.samples)],
                             length=length)
        tok_a = np.array(prompts.tokens)
        if arm.substitute is not None:
            tok_a[:, cols] = arm.substitute
        tokens.append(tok_a)
        valid.append(np.asarray(prompts.valid))
        keys.append(jax.vmap(jax.random.fold_in, (None, 0))(arm.key, jnp.arange(len(tok_a))))
        arm_of_row.append(np.full(len(tok_a), a))
        m = np.ones((cfg.num_layers, t, cfg.width), np.float32)
        f = np.zeros((cfg.num_layers, t, cfg.width), np.float32)
        for layer, (mask_d, values_d) in (arm.graft or {}).items():
            m[layer, cols] = 1.0 - mask_d
            f[layer, cols] = values_d * mask_d
        masks.append(m)
        fills.append(f)
    tokens, valid = np.concatenate(tokens), np.concatenate(valid)
    keys, arm_of_row = jnp.concatenate(keys), np.concatenate(arm_of_row)
    masks, fills = np.stack(masks, axis=1), np.stack(fills, axis=1)  # [L, arms, T, D]
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
        out.append(np.asarray(llama.generate(
            params, cfg, jnp.asarray(tokens[r]), jnp.asarray(valid[r]), keys[r],
            max_new=ic.tokens, temperature=ic.temperature, top_k=50, interventions=iv)))
    texts = iter(tok.decode([int(i) for i in row]) for row in np.concatenate(out)[:n])
    return {name: [next(texts) for _ in range(len(a.texts) * a.samples)]
            for name, a in arms.items()}


def _arm_texts(texts: dict[str, list[str]], concept: str, arm: str) -> list[str]:
    return texts.get(f"{concept}/{arm}", [])


def interventions(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any,
                  data: list[ConceptData], templates: dict, key: jax.Array) -> dict:
    """Activation, its token-substitution control, and inhibition, as rates of continuations
    naming the concept (each with a 95% Wilson interval).

    As in the paper's occurrence experiment: the residual stream entering each intervention
    layer is overwritten on the template's neurons at the ``ic.positions`` prompt tokens
    before the last one, in the prompt pass only. Activation grafts the template values into
    neutral prompts; the control types the concept word at the same positions instead;
    inhibition zeroes the template's neurons in prompts that produce the concept. Every arm of
    a comparison uses the same sampler and the same keys.
    """
    layers = ic.layers
    if layers[-1] >= cfg.num_layers or layers[0] < 0:
        raise ValueError(f"intervention layers {layers[0]}..{layers[-1]} must lie in 0.."
                         f"{cfg.num_layers - 1}; lower intervention_layer or "
                         "intervention_num_layers.")
    neutral = list(ic.neutral_prompts)
    # Inhibition prompts: the held-out prompts the intact model completes with the concept,
    # repeated to ``own_rows`` rows.
    own = {d.name: [d.texts[j] for j in np.resize(np.where(d.correct & d.test)[0],
                                                  ic.own_rows)]
           if (d.correct & d.test).any() else [] for d in data}
    every = neutral + [t for v in own.values() for t in v]
    if min(len(tok.encode(t).ids) for t in every) <= ic.positions:
        raise ValueError(f"every intervention prompt needs more than intervention_positions="
                         f"{ic.positions} tokens; lengthen the short prompts.")
    k_neutral = jax.random.fold_in(key, NEUTRAL_KEY)
    n_s = ic.samples
    arms = {"baseline": Arm(tuple(neutral), k_neutral, n_s)}
    grafts, words, control_word = {}, {}, {}
    for i, d in enumerate(data):
        grafts[d.name] = {layer: (templates[(d.name, layer)].neuron_mask.astype(np.float32),
                                  templates[(d.name, layer)].mean.astype(np.float32))
                          for layer in layers}
        zero = {layer: (g[0], np.zeros_like(g[0])) for layer, g in grafts[d.name].items()}
        words[d.name] = sorted(set(d.targets))
        # The control types the concept's most frequent training word.
        control_word[d.name] = int(np.bincount(d.target_ids[~d.test]).argmax())
        arms[f"{d.name}/activation"] = Arm(tuple(neutral), k_neutral, n_s, graft=grafts[d.name])
        arms[f"{d.name}/token_control"] = Arm(tuple(neutral), k_neutral, n_s,
                                              substitute=control_word[d.name])
        if own[d.name]:
            k_own = jax.random.fold_in(key, OWN_KEY + i)
            arms[f"{d.name}/inhibition_baseline"] = Arm(tuple(own[d.name]), k_own)
            arms[f"{d.name}/inhibition"] = Arm(tuple(own[d.name]), k_own, graft=zero)
    texts = sample(ic, params, cfg, tok, arms)
    out, examples = {}, {}
    for d in data:
        got = functools.partial(_arm_texts, texts, d.name)
        out[d.name] = {"baseline": rate(texts["baseline"], words[d.name]),
                       **{arm: rate(got(arm), words[d.name])
                          for arm in ("activation", "token_control", "inhibition_baseline",
                                      "inhibition")}}
        examples[d.name] = {"template_neurons": [int(g[0].sum())
                                                 for g in grafts[d.name].values()],
                            "control_word": tok.decode([control_word[d.name]]),
                            "grafted": got("activation")[0], "typed": got("token_control")[0],
                            "zeroed": got("inhibition")[0] if got("inhibition") else None}
    return {"rates": out, "details": {"layers": list(layers), "positions": ic.positions,
                                      "tokens": ic.tokens,
                                      "num_neutral_prompts": len(neutral),
                                      "examples": examples}}
