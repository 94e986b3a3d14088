"""Prompts for a LLaMA: encoding, target tokens, the intact forward passes (next-token
logits, cached residual streams, collected states) and the header all prompts share."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bablate.models import llama
from bablate.models.llama import Interventions, LlamaConfig


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Left-padded token ids of a prompt set."""

    tokens: np.ndarray  # [N, T] int32
    valid: np.ndarray   # [N, T] bool

    @property
    def num(self) -> int:
        return int(self.tokens.shape[0])


def encode(tokenizer, texts: Sequence[str], pad_id: int = 2, length: int = 0) -> Prompts:
    """Tokenizes and left-pads prompts (left padding keeps every last token at column −1).

    ``length`` pads to at least that many columns (one shape for several calls: one compile).
    """
    if not texts:
        raise ValueError("encode() needs at least one prompt.")
    ids = [tokenizer.encode(t).ids for t in texts]
    if any(len(i) == 0 for i in ids):
        raise ValueError("An empty prompt cannot be encoded; every prompt needs ≥ 1 token.")
    t = max(length, max(len(i) for i in ids))
    tokens = np.full((len(ids), t), pad_id, np.int32)
    valid = np.zeros((len(ids), t), bool)
    for n, row in enumerate(ids):
        tokens[n, t - len(row):] = row
        valid[n, t - len(row):] = True
    return Prompts(tokens, valid)


def word_token(tokenizer, word: str) -> int:
    """Id of ``" " + word`` when that is one token (the next-token target of a concept)."""
    ids = tokenizer.encode(" " + word).ids
    if len(ids) != 1:
        raise ValueError(f"' {word}' is {len(ids)} tokens {ids}; concept words must be a single "
                         "token with a leading space.")
    return int(ids[0])


def next_token_logits(params, cfg: LlamaConfig, prompts: Prompts,
                      interventions: Interventions | None = None) -> jax.Array:
    """Logits of the token after each prompt, ``[N, vocab]`` (jitted per config)."""
    return _next_logits(params, cfg, jnp.asarray(prompts.tokens), jnp.asarray(prompts.valid),
                        interventions)


def _next_logits_impl(params, cfg, tokens, valid, interventions):
    h, _ = llama.run(params, cfg, tokens, valid, output="hidden", interventions=interventions)
    return llama.unembed(params, cfg, h[:, -1])


_next_logits = jax.jit(_next_logits_impl, static_argnums=(1,))


def residual_cache(params, cfg: LlamaConfig, prompts: Prompts, layer: int) -> jax.Array:
    """The residual stream entering ``layer`` (``[N, T, D]``; layer 0 = the embeddings)."""
    return _residual(params, cfg, jnp.asarray(prompts.tokens), jnp.asarray(prompts.valid),
                     layer)


def _residual_impl(params, cfg, tokens, valid, layer):
    h, _ = llama.run(params, cfg, tokens, valid, stop=layer, output="hidden")
    return h


_residual = jax.jit(_residual_impl, static_argnums=(1, 4))


def collect_states(params, cfg: LlamaConfig, prompts: Prompts, what: str = "resid"):
    """Per-layer values over the prompts: ``[L, N, T, units]`` for "resid" / "neurons"."""
    if what not in ("resid", "neurons"):
        raise ValueError(f"collect_states: what must be 'resid' or 'neurons', got {what!r}.")
    return _collect(params, cfg, jnp.asarray(prompts.tokens), jnp.asarray(prompts.valid), what)


def _collect_impl(params, cfg, tokens, valid, what):
    _, collected = llama.run(params, cfg, tokens, valid, output="hidden", collect=(what,))
    return collected[what]


_collect = jax.jit(_collect_impl, static_argnums=(1, 4))


def shared_prefix(prompts: Prompts) -> tuple[Prompts, int]:
    """The prompts laid out as one shared prefix and each prompt's own tokens.

    Returns ``(laid_out, P)``: ``P`` is the number of leading real tokens every prompt shares
    (at most the shortest prompt's length − 1, so that every prompt keeps a token of its own),
    and ``laid_out`` has those ``P`` tokens in its first columns and each prompt's remaining
    tokens left-padded after them. Padding in the middle changes nothing: positions count real
    tokens and padded keys are masked, so every prompt is the same sequence as before.
    ``P = 0`` returns ``prompts`` unchanged.
    """
    rows = [t[v] for t, v in zip(prompts.tokens, prompts.valid, strict=True)]
    shortest = min(len(r) for r in rows)
    if len(rows) < 2 or shortest < 2:
        return prompts, 0
    stacked = np.stack([r[:shortest - 1] for r in rows])
    differs = np.any(stacked != stacked[:1], axis=0)
    p = int(np.argmax(differs)) if differs.any() else shortest - 1
    if p == 0:
        return prompts, 0
    s = max(len(r) for r in rows) - p
    tokens = np.zeros((len(rows), p + s), np.int32)
    valid = np.zeros((len(rows), p + s), bool)
    tokens[:, :p], valid[:, :p] = rows[0][:p], True
    for n, r in enumerate(rows):
        tokens[n, p + s - (len(r) - p):] = r[p:]
        valid[n, p + s - (len(r) - p):] = True
    return Prompts(tokens, valid), p
