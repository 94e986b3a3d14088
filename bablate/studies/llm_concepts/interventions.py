"""Activation, inhibition and the token control: grafting or zeroing a PA template while the
prompt is read, and how often the sampled continuations name the concept."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bablate import llm
from bablate.models import llama
from bablate.models.llama import LlamaConfig
from bablate.testbeds.llama import ConceptData

from .config import Interventions

# Sub-keys of the interventions key: the neutral prompts' samples, then one per concept's
# inhibition prompts (OWN_KEY + concept index).
NEUTRAL_KEY, OWN_KEY = 0, 1


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


def sample(ic: Interventions, params: dict, cfg: LlamaConfig, tok: Any, texts: list[str],
           key: jax.Array, length: int, samples: int, graft: dict | None = None,
           substitute: int | None = None) -> list[str]:
    """Sampled continuations, ``samples`` per text.

    ``graft = {layer: (neuron_mask [D], values [D])}`` overwrites the residual stream entering
    each of those layers on the masked neurons, at the ``ic.positions`` prompt tokens before
    the last one, while the prompt is read (decoding runs unmodified). ``substitute`` instead
    types that token id at the same positions. Prompts are padded to ``length`` and the
    (possibly identity) graft is always passed: one compile per batch size.
    """
    prompts = llm.encode(tok, [t for t in texts for _ in range(samples)], length=length)
    t = prompts.tokens.shape[1]
    cols = slice(t - 1 - ic.positions, t - 1)
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
                         key, max_new=ic.tokens, temperature=ic.temperature,
                         top_k=50, interventions=iv)
    return [tok.decode([int(i) for i in row]) for row in np.asarray(out)]


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
    # repeated to a fixed number of rows (one batch shape, one compile).
    own = {d.name: [d.texts[j] for j in np.resize(np.where(d.correct & d.test)[0],
                                                  ic.own_rows)]
           if (d.correct & d.test).any() else [] for d in data}
    every = neutral + [t for v in own.values() for t in v]
    length = max(len(tok.encode(t).ids) for t in every)
    if min(len(tok.encode(t).ids) for t in every) <= ic.positions:
        raise ValueError(f"every intervention prompt needs more than intervention_positions="
                         f"{ic.positions} tokens; lengthen the short prompts.")
    k_neutral = jax.random.fold_in(key, NEUTRAL_KEY)
    n_s = ic.samples
    draw = lambda texts, k, n, **kw: sample(ic, params, cfg, tok, texts, k, length, n, **kw)
    base = draw(neutral, k_neutral, n_s)
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
        grafted = draw(neutral, k_neutral, n_s, graft=graft)
        typed = draw(neutral, k_neutral, n_s, substitute=word_id)
        k_own = jax.random.fold_in(key, OWN_KEY + i)
        own_base, zeroed = [], []
        if own[d.name]:
            own_base = draw(own[d.name], k_own, 1)
            zeroed = draw(own[d.name], k_own, 1, graft=zero)
        out[d.name] = {"baseline": rate(base, words), "activation": rate(grafted, words),
                       "token_control": rate(typed, words),
                       "inhibition_baseline": rate(own_base, words),
                       "inhibition": rate(zeroed, words)}
        examples[d.name] = {"template_neurons": [int(g[0].sum()) for g in graft.values()],
                            "control_word": tok.decode([word_id]),
                            "grafted": grafted[0], "typed": typed[0],
                            "zeroed": zeroed[0] if zeroed else None}
    return {"rates": out, "details": {"layers": list(layers), "positions": ic.positions,
                                      "tokens": ic.tokens,
                                      "num_neutral_prompts": len(neutral),
                                      "examples": examples}}
