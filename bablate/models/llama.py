"""A LLaMA decoder in flax (SmolLM2-135M sized by default), with ablation hooks and KV caching.

Architecture: token embedding (tied with the output), per layer RMSNorm → grouped-query
attention with rotate-half RoPE → residual, RMSNorm → SwiGLU MLP → residual; final RMSNorm.
Layers are a ``nn.scan`` over parameters stacked on axis 0, so a 30-layer model compiles one
block, and any contiguous range of layers can be run on its own (start from a cached residual
stream at layer L, stop before layer L to build that cache).

Ablation hooks (:class:`Interventions`, all multiplicative masks stacked over layers):
``heads`` scales each attention head's output before the output projection, ``neurons`` scales
the post-SwiGLU hidden units of the MLP, ``resid`` replaces the residual stream entering a layer
by ``m·h + (1 − m)·fill``. Each per-layer mask has shape [..., units] with up to two leading axes
that broadcast against [batch, position].

A layer can also be entered half-way: :func:`mlp_hidden` computes a layer's MLP hidden from the
residual after its attention (collected as "mid"), and :func:`mlp_residual` adds the MLP output
of a given (possibly rewritten) hidden back to it, which gives the residual entering the next
layer. Together with a run from that layer on, this splits the model at one MLP activation.

Sampling continuations (a KV cache, interventions on the prompt pass) and cutting them at the
model's end of turn: :mod:`bablate.models.llama_generate`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, cast

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """LLaMA hyperparameters (defaults: SmolLM2-135M)."""

    vocab_size: int = 49152
    num_layers: int = 30
    width: int = 576
    mlp_width: int = 1536
    num_heads: int = 9
    num_kv_heads: int = 3
    rope_base: float = 100000.0
    norm_eps: float = 1e-5
    # The projections' input dtype: "bfloat16" multiplies bf16 inputs and weights with float32
    # accumulation (SmolLM2 was trained in bf16); norms, attention, softmax, the residual stream
    # and the read-out stay float32. Faster only where the backend has fast bf16 kernels: 1.6x
    # less per mask on the LLM study's sites on an AMD EPYC, 1.4-1.6x more on an Intel Xeon
    # (benchmarks/llm_bf16.py; `bf16_speedup` measures it, and the LLM sites warn when slower).
    matmul_dtype: str = "float32"

    def __post_init__(self):
        if self.matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"matmul_dtype {self.matmul_dtype!r} is not one of 'float32', "
                             "'bfloat16'.")
        if self.width % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"width {self.width} must divide into {self.num_heads} heads and "
                             f"heads into {self.num_kv_heads} KV groups.")
        if (self.width // self.num_heads) % 2:
            raise ValueError("RoPE needs an even head dimension.")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def replace(self, **kwargs) -> LlamaConfig:
        return dataclasses.replace(self, **kwargs)


@flax.struct.dataclass
class Interventions:
    """Per-layer masks, each stacked over the layers that run ([L, ..., units]); None = off."""

    heads: jax.Array | None = None         # [L, ..., num_heads]
    neurons: jax.Array | None = None       # [L, ..., mlp_width]
    resid: jax.Array | None = None         # [L, ..., width]
    heads_fill: jax.Array | None = None    # [L, num_heads, head_dim]; default 0
    neurons_fill: jax.Array | None = None  # [L, ..., mlp_width]; default 0
    resid_fill: jax.Array | None = None    # [L, ..., width]; default 0


def _rank3(m):
    """[..., X] with ≤ 2 leading axes → [1|B, 1|T, X] (explicit, no implicit rank promotion)."""
    if m.ndim > 3:
        raise ValueError(f"per-layer mask has shape {m.shape}; at most [batch, position, units].")
    return m.reshape((1,) * (3 - m.ndim) + m.shape)


def _ablate(x, mask, fill):
    """Keeps ``x`` where ``mask`` is 1 and puts ``fill`` (0 when None) where it is 0."""
    return mask * x + (1.0 - mask) * (0.0 if fill is None else fill)


def _bf16_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
              **kwargs):
    """``lax.dot_general`` on bf16-rounded operands, accumulated and returned in float32."""
    del preferred_element_type, kwargs
    return jax.lax.dot_general(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16),
                               dimension_numbers, precision=precision,
                               preferred_element_type=jnp.float32)


@functools.cache
def bf16_speedup(tokens: int = 1024, width: int = 576, hidden: int = 1536) -> float:
    """How many times faster a ``matmul_dtype="bfloat16"`` projection runs than float32 on
    JAX's default backend: the best of 7 timings of a ``[tokens, width] @ [width, hidden]``
    product each way (SmolLM2's up-projection shape by default), measured once per process.

    Below 1 where the backend has no fast bf16 kernels: side by side per mask on the LLM
    study's sites, bf16 was 1.6x faster on an AMD EPYC (Zen 4) and 1.4-1.6x *slower* on an
    Intel Xeon, both reporting AVX512-BF16 (benchmarks/README.md), so a CPU's flags do not say.
    """
    import time

    x = jnp.ones((tokens, width), jnp.float32)
    w = jnp.ones((width, hidden), jnp.float32)
    dims = (((1,), (0,)), ((), ()))
    best = {}
    for name, dot in (("float32", lambda a, b: jax.lax.dot_general(a, b, dims)),
                      ("bfloat16", lambda a, b: _bf16_dot(a, b, dims))):
        f = jax.jit(dot)
        f(x, w).block_until_ready()  # compile
        times = []
        for _ in range(7):
            start = time.perf_counter()
            f(x, w).block_until_ready()
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    return best["float32"] / best["bfloat16"]


def rope(x_BxTxHxK, positions_BxT, base: float):
    """Rotate-half rotary embedding."""
    half = x_BxTxHxK.shape[-1] // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions_BxT.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = x_BxTxHxK[..., :half], x_BxTxHxK[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class RMSNorm(nn.Module):
    eps: float

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(var + self.eps) * scale.reshape((1,) * (x.ndim - 1) + (-1,))


class Block(nn.Module):
    """One decoder layer; scanned over layers by :class:`Llama`."""

    cfg: LlamaConfig
    collect: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, h, xs, positions_BxT, key_ok_BxS, cache_index):
        cfg = self.cfg
        dense = functools.partial(nn.Dense, use_bias=False,
                                  dot_general=_bf16_dot if cfg.matmul_dtype == "bfloat16"
                                  else None)
        masks, k_cache, v_cache = xs["masks"], xs["k"], xs["v"]
        collected = {}
        if masks.resid is not None:
            fill = None if masks.resid_fill is None else _rank3(masks.resid_fill)
            h = _ablate(h, _rank3(masks.resid), fill)
        if "resid" in self.collect:
            collected["resid"] = h

        b, t, _ = h.shape
        hd, nh, nkv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        x = RMSNorm(cfg.norm_eps, name="attn_norm")(h)
        q = dense(cfg.width, name="q")(x).reshape(b, t, nh, hd)
        k = dense(nkv * hd, name="k")(x).reshape(b, t, nkv, hd)
        v = dense(nkv * hd, name="v")(x).reshape(b, t, nkv, hd)
        q = rope(q, positions_BxT, cfg.rope_base)
        k = rope(k, positions_BxT, cfg.rope_base)
        if k_cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(k_cache, k, cache_index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(v_cache, v, cache_index, axis=1)
        s = k.shape[1]
        q = q.reshape(b, t, nkv, nh // nkv, hd)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k) / jnp.sqrt(jnp.float32(hd))
        causal_TxS = (jnp.arange(s)[None, :] <= (cache_index + jnp.arange(t))[:, None])
        allowed = causal_TxS[None, :, :] & key_ok_BxS[:, None, :]
        scores = jnp.where(allowed[:, None, None, :, :], scores, jnp.float32(-1e30))
        probs = jax.nn.softmax(scores, axis=-1)
        heads = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, nh, hd)
        if masks.heads is not None:
            fill = None if masks.heads_fill is None else masks.heads_fill[None, None]
            heads = _ablate(heads, _rank3(masks.heads)[..., None], fill)
        if "heads" in self.collect:
            collected["heads"] = heads
        h = h + dense(cfg.width, name="o")(heads.reshape(b, t, nh * hd))
        if "mid" in self.collect:
            collected["mid"] = h

        x = RMSNorm(cfg.norm_eps, name="mlp_norm")(h)
        act = nn.silu(dense(cfg.mlp_width, name="gate")(x)) * dense(cfg.mlp_width, name="up")(x)
        if masks.neurons is not None:
            fill = None if masks.neurons_fill is None else _rank3(masks.neurons_fill)
            act = _ablate(act, _rank3(masks.neurons), fill)
        if "neurons" in self.collect:
            collected["neurons"] = act
        h = h + dense(cfg.width, name="down")(act)
        new_cache = (k, v) if k_cache is not None else None
        return h, (new_cache, collected)


# (output, KV cache, collected): what Llama.apply returns. flax types apply's result as the
# output or an (output, variables) pair, the pair only with mutable=, which bablate never sets.
_LlamaOut = tuple[jax.Array, Any, dict]


class Llama(nn.Module):
    """LLaMA over a contiguous range of ``cfg.num_layers`` stacked layers.

    Attributes:
        cfg: hyperparameters; ``num_layers`` is the number of layers this module runs.
        collect: per-layer values to return, any of "resid" (residual entering the layer),
            "heads" (per-head attention outputs), "mid" (residual after the attention, entering
            the MLP), "neurons" (post-SwiGLU MLP hidden).
        embed_input: start from token ids (True) or from a residual stream (False).
        output: "logits" (final norm + tied unembedding) or "hidden" (residual after the last
            layer that runs).
    """

    cfg: LlamaConfig
    collect: tuple[str, ...] = ()
    embed_input: bool = True
    output: str = "logits"

    @nn.compact
    def __call__(self, x, positions_BxT, key_ok_BxS, cache=None, cache_index=0,
                 interventions: Interventions | None = None):
        cfg = self.cfg
        embed = nn.Embed(cfg.vocab_size, cfg.width, name="embed")
        h = embed(x) if self.embed_input else x
        masks = interventions if interventions is not None else Interventions()
        xs = {"masks": masks,
              "k": None if cache is None else cache[0],
              "v": None if cache is None else cache[1]}
        layers = nn.scan(
            Block, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
        )(cfg, self.collect, name="layers")
        h, (new_cache, collected) = layers(h, xs, positions_BxT, key_ok_BxS, cache_index)
        if self.output == "hidden":
            out = h
        else:
            out = embed.attend(RMSNorm(cfg.norm_eps, name="final_norm")(h))
        return out, new_cache, collected


def layer_range(params: dict, start: int, stop: int) -> dict:
    """Params restricted to layers [start, stop) (embedding and final norm kept)."""
    out = dict(params)
    out["layers"] = jax.tree.map(lambda a: a[start:stop], params["layers"])
    return out


def layer_params(params: dict, layer: int) -> dict:
    """The params of one layer (unstacked: ``{"gate": {"kernel": [D, F]}, ...}``)."""
    return jax.tree.map(lambda a: a[layer], params["layers"])


def mlp_hidden(layer: dict, cfg: LlamaConfig, mid_BxTxD):
    """A layer's post-SwiGLU MLP hidden ``silu(gate)·up`` ``[B, T, F]``.

    Args:
        layer: that layer's params (:func:`layer_params`).
        cfg: the model config.
        mid_BxTxD: the residual after the layer's attention (``collect=("mid",)``).
    """
    x = RMSNorm(cfg.norm_eps).apply({"params": layer["mlp_norm"]}, mid_BxTxD)
    dense = nn.Dense(cfg.mlp_width, use_bias=False)
    gate = cast(jax.Array, dense.apply({"params": layer["gate"]}, x))  # see _LlamaOut
    return nn.silu(gate) * dense.apply({"params": layer["up"]}, x)


def mlp_residual(layer: dict, cfg: LlamaConfig, mid_BxTxD, hidden_BxTxF):
    """The residual leaving a layer, ``mid + down(hidden)``, for any MLP hidden ``[B, T, F]``."""
    down = nn.Dense(cfg.width, use_bias=False).apply({"params": layer["down"]}, hidden_BxTxF)
    return mid_BxTxD + down


def positions_from_valid(valid_BxT):
    """RoPE positions for left-padded rows (padding gets position 0)."""
    return jnp.maximum(jnp.cumsum(valid_BxT.astype(jnp.int32), axis=1) - 1, 0)


def run(params, cfg: LlamaConfig, x, valid_BxT, *, start: int = 0, stop: int | None = None,
        output: str = "logits", collect: tuple[str, ...] = (),
        interventions: Interventions | None = None, embed_input: bool | None = None):
    """Runs layers [start, stop) over full sequences (no cache).

    Args:
        params: flax params of the full model (``{"embed", "layers", "final_norm"}``).
        cfg: the full model's config.
        x: token ids [B, T] when ``start == 0``, else the residual stream [B, T, D] entering
            layer ``start`` (e.g. cached from an earlier call with ``output="hidden"``).
        valid_BxT: True on real tokens (rows are left-padded).
        start, stop: layer range (static).
        output: "logits" [B, T, V] or "hidden" [B, T, D] (residual leaving layer stop − 1).
        collect: per-layer values to return stacked on axis 0 (see :class:`Llama`).
        interventions: masks stacked over the layers that run (stop − start).
        embed_input: whether ``x`` is token ids (default: ``start == 0``).

    Returns:
        (output array, dict of collected arrays).
    """
    stop = cfg.num_layers if stop is None else stop
    if not 0 <= start <= stop <= cfg.num_layers:
        raise ValueError(f"layer range [{start}, {stop}) outside [0, {cfg.num_layers}].")
    embed_input = start == 0 if embed_input is None else embed_input
    model = Llama(cfg.replace(num_layers=stop - start), collect, embed_input, output)
    out, _, collected = cast(_LlamaOut, model.apply(
        {"params": layer_range(params, start, stop)}, x, positions_from_valid(valid_BxT),
        valid_BxT, interventions=interventions))
    return out, collected


def init_cache(cfg: LlamaConfig, batch: int, length: int):
    """Zero KV cache ([L, B, S, kv_heads, head_dim] for keys and values)."""
    shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
    return jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)


def step(params, cfg: LlamaConfig, x, positions_BxT, key_ok_BxS, cache, cache_index,
         interventions: Interventions | None = None, *, embed_input: bool = True,
         output: str = "logits"):
    """Runs all ``cfg.num_layers`` layers on new tokens with a KV cache.

    Args:
        x: token ids [B, T] (``embed_input``) or residual states [B, T, D].
        positions_BxT: RoPE positions of the new tokens.
        key_ok_BxS: which cache slots hold real tokens.
        cache: (keys, values) from :func:`init_cache`; slots [cache_index, cache_index + T) are
            overwritten with the new tokens' keys and values.
        cache_index: first slot of the new tokens.
        output: "logits" or "hidden".

    Returns:
        (logits [B, T, V] or hidden [B, T, D], updated cache).
    """
    out, cache, _ = cast(_LlamaOut, Llama(cfg, (), embed_input, output).apply(
        {"params": params}, x, positions_BxT, key_ok_BxS, cache, cache_index, interventions))
    return out, cache


def unembed(params, cfg: LlamaConfig, h_NxD):
    """Final RMSNorm + tied unembedding of residual states ([N, D] → [N, V])."""
    var = jnp.mean(jnp.square(h_NxD), axis=-1, keepdims=True)
    x = h_NxD * jax.lax.rsqrt(var + cfg.norm_eps) * params["final_norm"]["scale"][None, :]
    return x @ params["embed"]["embedding"].T


def init_params(cfg: LlamaConfig, key, scale: float = 0.05) -> dict:
    """Random params (normal, std ``scale``; norm scales around 1) for tests and toy runs."""
    d, f, hd = cfg.width, cfg.mlp_width, cfg.head_dim
    shapes = {"q": (d, d), "k": (d, cfg.num_kv_heads * hd), "v": (d, cfg.num_kv_heads * hd),
              "o": (d, d), "gate": (d, f), "up": (d, f), "down": (f, d)}
    keys = jax.random.split(key, len(shapes) + 4)
    layers = {}
    for i, (name, shape) in enumerate(shapes.items()):
        layers[name] = {"kernel": scale * jax.random.normal(keys[i], (cfg.num_layers, *shape))}
    for j, name in enumerate(("attn_norm", "mlp_norm")):
        layers[name] = {"scale": 1.0 + 0.1 * jax.random.normal(keys[-1 - j],
                                                               (cfg.num_layers, d))}
    return {"embed": {"embedding": jax.random.normal(keys[-3], (cfg.vocab_size, d))},
            "layers": layers,
            "final_norm": {"scale": 1.0 + 0.1 * jax.random.normal(keys[-4], (d,))}}
