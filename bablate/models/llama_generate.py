"""Sampling from a LLaMA (:mod:`bablate.models.llama`): :func:`generate` samples a fixed
number of tokens per row (a KV cache, interventions on the prompt pass); :func:`cut_at_end` then
cuts each row at the model's end of turn."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bablate.models import llama


def _key_shape(key) -> tuple[int, ...]:
    """The batch shape of a PRNG key array, typed (``jax.random.key``) or raw uint32."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    return tuple(key.shape if typed else key.shape[:-1])


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "temperature", "top_k"))
def generate(params, cfg: llama.LlamaConfig, tokens_BxT, valid_BxT, key, *, max_new: int,
             temperature: float = 0.0, top_k: int = 0,
             interventions: llama.Interventions | None = None):
    """Greedy (temperature 0) or sampled continuation with a KV cache.

    Args:
        tokens_BxT, valid_BxT: left-padded prompts.
        key: PRNG key for sampling (unused when greedy): one for the batch, or one per row
            ([B]), with which a row's continuation does not depend on the other rows, so
            rows can be batched in any grouping and give the same tokens.
        max_new: number of tokens generated per row (no early stop: :func:`cut_at_end` cuts
            each row at the model's end of turn afterwards).
        temperature, top_k: sampling settings (top_k 0, or ≥ the vocabulary: all of it).
        interventions: masks applied while the prompt is read (e.g. a grafted residual state
            at one position); decoding steps run unmodified.

    Returns:
        new tokens [B, max_new] (int32).
    """
    b, t = tokens_BxT.shape
    s = t + max_new
    key_ok = jnp.concatenate([valid_BxT, jnp.ones((b, max_new), bool)], axis=1)
    positions = llama.positions_from_valid(valid_BxT)
    # The prompt pass unembeds only its last position: logits at every prompt position would
    # be [B, T, 49,152] floats for SmolLM2, most of the pass's time and memory.
    h, cache = llama.step(params, cfg, tokens_BxT, positions, key_ok,
                          llama.init_cache(cfg, b, s), 0, interventions, output="hidden")
    last_logits = llama.unembed(params, cfg, h[:, -1])

    def pick(logits_BxV, k):
        if temperature == 0.0:
            return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        logits_BxV = logits_BxV / temperature
        if 0 < top_k < logits_BxV.shape[-1]:  # top_k ≥ the vocabulary keeps all of it
            # Drawn among the k largest logits only: the same distribution as masking the
            # rest to -inf, with noise for k values instead of the whole vocabulary (a step
            # for SmolLM2 at 210 rows on 2 CPU cores: 31 ms, against 355 ms masked and
            # 2.3 s when the k-th value was read by slicing; benchmarks/llm_sampling.py).
            values, index = jax.lax.top_k(logits_BxV, top_k)
            choice = jax.random.categorical(k, values, axis=-1)
            return jnp.take_along_axis(index, choice[..., None], axis=-1)[..., 0].astype(
                jnp.int32)
        return jax.random.categorical(k, logits_BxV, axis=-1).astype(jnp.int32)

    if _key_shape(key) not in ((), (b,)):
        raise ValueError(f"generate needs one PRNG key or one per row ({b}); got keys of "
                         f"shape {_key_shape(key)}.")
    if _key_shape(key):  # one key per row: [max_new, B] step keys, drawn row by row
        keys = jax.vmap(lambda k: jax.random.split(k, max_new), out_axes=1)(key)
        pick = jax.vmap(pick)
    else:
        keys = jax.random.split(key, max_new)
    first = pick(last_logits, keys[0])
    last_pos = positions[:, -1]

    def body(carry, i):
        tok, cache = carry
        pos = (last_pos + 1 + i)[:, None]
        logits, cache = llama.step(params, cfg, tok[:, None], pos, key_ok, cache, t + i)
        nxt = pick(logits[:, -1], keys[i + 1])
        return (nxt, cache), nxt

    _, rest = jax.lax.scan(body, (first, cache), jnp.arange(max_new - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


def cut_at_end(tokens_BxN, end_id: int, reply_prefix: Sequence[int] = ()) -> list[list[int]]:
    """Each row of generated tokens up to its end of turn (the end token left out).

    A row ends at its first ``end_id``, except where that token ends the *prompt's* turn and
    the model opens its own reply right after it (``end_id`` followed by ``reply_prefix``):
    then the reply is kept and the row ends at the next ``end_id``. A chat model such as
    SmolLM2-Instruct, given a bare question, mostly closes it as the user's turn and answers
    in an assistant turn (``<|im_end|>\n<|im_start|>assistant\n ... <|im_end|>``); what it
    writes after its own turn has ended (new user or system turns) is cut. A row without an end
    keeps every token.

    Args:
        tokens_BxN: generated tokens (:func:`generate`'s output), [B, N].
        end_id: the end-of-turn token.
        reply_prefix: the tokens that open the model's reply after an ``end_id`` (empty: every
            row ends at its first ``end_id``).

    Returns:
        One list of token ids per row.
    """
    rows, prefix = np.asarray(tokens_BxN).tolist(), list(reply_prefix)
    out = []
    for row in rows:
        ends = [i for i, t in enumerate(row) if t == end_id]
        if not ends:
            out.append(row)
            continue
        first = ends[0]
        opens_reply = bool(prefix) and row[first + 1:first + 1 + len(prefix)] == prefix
        later = [i for i in ends[1:] if i > first + len(prefix)] if opens_reply else []
        cut = first if not opens_reply else (later[0] if later else len(row))
        out.append(row[:cut])
    return out
