"""The mask-aware LLaMA sites (:func:`build_site`: attention heads, MLP neurons, the residual
stream), their bf16 check, the target read-out and :func:`evaluate_masks`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bablate import rules
from bablate.callsite import warn_caller
from bablate.llm._prompts import Prompts, residual_cache, shared_prefix
from bablate.models import llama
from bablate.models.llama import Interventions, LlamaConfig
from bablate.rules import Rule
from bablate.sites import Site, ablation_value
from bablate.tasks import outputs_evaluator

KINDS = ("heads", "neurons", "resid")


ABLATIONS = ("zero", "mean")


@dataclasses.dataclass(frozen=True)
class SiteSpec:
    """Which units a site holds.

    Attributes:
        kind: "heads" (units = heads of ``layers``, layer-major), "neurons" (the MLP hidden of
            one layer) or "resid" (the residual stream entering one layer).
        layers: the layers the site spans (one layer for neurons / resid).
        heads: for kind "heads", optionally a subset of head indices per layer (same subset in
            every layer); None = all heads.
        ablation: "zero" or "mean" (mean over prompts and positions of the unmasked network).
        positions: "all" (mask every prompt position, the standard ablation) or "last" (mask
            only the last position, where the next token is read out; earlier positions and
            their keys/values are cached, so a mask costs one token per prompt).
    """

    kind: str
    layers: tuple[int, ...]
    heads: tuple[int, ...] | None = None
    ablation: Literal["zero", "mean"] = "zero"
    positions: str = "all"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"site kind must be one of {KINDS}, got {self.kind!r}.")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}.")
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be a non-empty increasing tuple, got {self.layers}.")
        if self.positions not in ("all", "last"):
            raise ValueError(f"positions must be 'all' or 'last', got {self.positions!r}.")
        if self.kind != "heads" and len(self.layers) != 1:
            raise ValueError(f"a {self.kind} site spans exactly one layer, got {self.layers}.")

    def num_units(self, cfg: LlamaConfig) -> int:
        if self.kind == "heads":
            per_layer = cfg.num_heads if self.heads is None else len(self.heads)
            return per_layer * len(self.layers)
        return cfg.mlp_width if self.kind == "neurons" else cfg.width

    @property
    def name(self) -> str:
        span = (f"L{self.layers[0]}" if len(self.layers) == 1
                else f"L{self.layers[0]}-{self.layers[-1]}")
        sub = "" if self.heads is None else f"h{','.join(map(str, self.heads))}"
        last = ",last" if self.positions == "last" else ""
        return f"{self.kind}[{span}{sub}{last}]"


def _check_spec(spec: SiteSpec, cfg: LlamaConfig):
    if spec.layers[-1] >= cfg.num_layers or spec.layers[0] < 0:
        raise ValueError(f"site layers {spec.layers} outside [0, {cfg.num_layers}).")
    if spec.heads is not None and (not spec.heads or max(spec.heads) >= cfg.num_heads
                                   or min(spec.heads) < 0):
        raise ValueError(f"head subset {spec.heads} outside [0, {cfg.num_heads}).")


def _interventions(spec: SiteSpec, cfg: LlamaConfig, mask_D, fills) -> Interventions:
    """Masks for layers [first, num_layers) with the site's units set from ``mask_D``."""
    first = spec.layers[0]
    rel = np.asarray(spec.layers) - first
    n = cfg.num_layers - first
    if spec.kind == "heads":
        per = cfg.num_heads if spec.heads is None else len(spec.heads)
        cols = np.arange(cfg.num_heads) if spec.heads is None else np.asarray(spec.heads)
        grid = jnp.ones((n, cfg.num_heads), jnp.float32)
        grid = grid.at[rel[:, None], cols[None, :]].set(mask_D.reshape(len(rel), per))
        return Interventions(heads=grid, heads_fill=fills)
    width = cfg.mlp_width if spec.kind == "neurons" else cfg.width
    grid = jnp.ones((n, width), jnp.float32).at[0].set(mask_D)
    if spec.kind == "neurons":
        return Interventions(neurons=grid, neurons_fill=fills)
    return Interventions(resid=grid, resid_fill=fills)


def _fills(params, cfg, spec: SiteSpec, prompts: Prompts):
    """Per-layer ablation values for layers [first, L) (None for zero ablation)."""
    if spec.ablation == "zero":
        return None
    first = spec.layers[0]
    n = cfg.num_layers - first
    valid = jnp.asarray(prompts.valid)[None, :, :, None].astype(jnp.float32)
    what = {"heads": "heads", "neurons": "neurons", "resid": "resid"}[spec.kind]
    _, collected = jax.jit(llama.run, static_argnums=(1,),
                           static_argnames=("output", "collect"))(
        params, cfg, jnp.asarray(prompts.tokens), jnp.asarray(prompts.valid), output="hidden",
        collect=(what,))
    vals = collected[what][first:]
    if what == "heads":  # [L, N, T, H, hd] → mean over real tokens → [L, H, hd]
        w = valid[..., None]
        return (vals * w).sum((1, 2)) / w.sum((1, 2))
    mean = (vals * valid).sum((1, 2)) / valid.sum((1, 2))
    return mean.reshape(n, -1)


class SlowBf16Warning(UserWarning):
    """bf16 projections were asked for on a backend where they run slower than float32."""


def bf16_speedup_here(cfg: LlamaConfig) -> float | None:
    """`llama.bf16_speedup` (measured once per process) where ``cfg`` asks for bf16 projections
    on a CPU, whose bf16 speed depends on the CPU, not its flags; None for float32, and on GPUs
    and TPUs, which multiply bf16 natively."""
    if cfg.matmul_dtype != "bfloat16" or jax.default_backend() != "cpu":
        return None
    return llama.bf16_speedup()


def _warn_if_bf16_is_slow(cfg: LlamaConfig) -> None:
    """Warns (once per call site) when ``cfg`` asks for bf16 projections on a CPU where they
    measure slower than float32 (`bf16_speedup_here`): the run would be slower and less exact
    than without them."""
    speedup = bf16_speedup_here(cfg)
    if speedup is not None and speedup < 1.0:
        warn_caller(SlowBf16Warning(
            f"bf16 projections (matmul_dtype='bfloat16') run {1 / speedup:.1f}x slower than "
            "float32 on this CPU (measured at start: llama.bf16_speedup() = "
            f"{speedup:.2f}); use float32, the full-precision model (the LLM study: "
            "--config.ablation_matmuls=float32)"))


def build_site(params, cfg: LlamaConfig, spec: SiteSpec, prompts: Prompts, *,
               targets=None, share_prefix: bool = True, length_buckets: int = 1
               ) -> tuple[Site, dict]:
    """A cached bablate site for heads / neurons / residual units of a LLaMA.

    Args:
        params: full-model params.
        cfg: full-model config.
        spec: which units (see :class:`SiteSpec`).
        prompts: the dataset; the residual stream entering the first ablated layer is computed
            once here.
        targets: optional target token per prompt ``[N]``: the site then reads out only
            :func:`target_readout`'s ``[N, 2]`` for :func:`target_rule` (the correctness of
            ``bablate.rules.top1`` on the full logits), so many masks fit one evaluated batch
            (see :func:`build_mlp_site`).
        share_prefix: with ``positions="all"``, run the tokens every prompt starts with (a
            few-shot header, say) once per mask instead of once per prompt, and the prompts'
            own tokens after them (:func:`shared_prefix`; causal attention makes the two
            equal). On the LLM study's concepts a mask then runs 2.9× fewer tokens.
        length_buckets: with ``positions="all"``, run the prompts (their own tokens after a
            shared prefix) in at most this many groups of similar length, each padded only to
            its longest (:func:`bucket_rows`), so that short prompts do not run padding; the
            shared prefix still runs once per mask. Same outputs, in the prompts' order.

    Returns:
        (site, inputs): pass both to ``bablate.Task.build(site, inputs, rule)``. The site's
        outputs under a mask are the next-token logits ``[N, vocab]`` (``[N, 2]`` with
        ``targets``).
    """
    _check_spec(spec, cfg)
    _warn_if_bf16_is_slow(cfg)
    if length_buckets > 1 and spec.positions != "all":
        raise ValueError(f"length_buckets={length_buckets} groups prompts only with "
                         "positions='all' (at 'last' a mask runs one token per prompt); use "
                         "length_buckets=1.")
    first = spec.layers[0]
    d = spec.num_units(cfg)
    suffix_cfg = cfg.replace(num_layers=cfg.num_layers - first)
    fills = _fills(params, cfg, spec, prompts)
    p = 0
    if spec.positions == "all" and share_prefix:
        prompts, p = shared_prefix(prompts)
    h = residual_cache(params, cfg, prompts, first)
    inputs = {
        "h": h,
        "valid": jnp.asarray(prompts.valid),
        "params": llama.layer_range(params, first, cfg.num_layers),
        "fills": fills,
    }
    if p:
        # The shared tokens' states are the same in every row: keep one.
        inputs["h"], inputs["h_prefix"] = h[:, p:], h[:1, :p]
    if spec.positions == "last":
        # Keys/values of every position at layers ≥ first; the suffix recomputes only the last
        # token (its cache slot is overwritten under the mask).
        inputs["cache"] = _kv_cache(inputs["params"], suffix_cfg, h, inputs["valid"])
        inputs["h"] = h[:, -1:]
    if targets is not None:
        inputs["targets"] = _check_targets(targets, prompts)
    groups = None
    if length_buckets > 1:
        groups = bucket_rows(prompts.valid[:, p:].sum(1), length_buckets)
        groups = groups if len(groups) > 1 else None

    def suffix(mask_D, inputs):
        iv = _interventions(spec, cfg, mask_D, inputs["fills"])
        if spec.positions == "last":
            valid = inputs["valid"]
            t = valid.shape[1]
            pos = llama.positions_from_valid(valid)[:, -1:]
            h, _ = llama.step(inputs["params"], suffix_cfg, inputs["h"], pos, valid,
                              inputs["cache"], t - 1, iv, embed_input=False, output="hidden")
        else:
            h = _run_all_positions(inputs, suffix_cfg, iv, groups)
        logits = llama.unembed(inputs["params"], cfg, h[:, -1])
        return logits if targets is None else target_readout(logits, inputs["targets"])

    # A site evaluated with bf16 matmuls says so wherever its identity is reported.
    name = spec.name if cfg.matmul_dtype == "float32" else f"{spec.name}, bf16 matmuls"
    return Site.mask_aware(name, d, suffix, ablation=spec.ablation), inputs


def bucket_rows(lengths, max_buckets: int) -> list[tuple[np.ndarray, int]]:
    """Rows grouped by length into at most ``max_buckets`` groups with the fewest tokens when
    each group is padded to its longest row: ``[(rows, width), ...]``, longest first.

    Exact (dynamic programming over the rows sorted by length); of equally good groupings the
    one with fewer groups wins, since every group is one more pass per mask.
    """
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    n, k = len(lengths), max(1, min(int(max_buckets), len(lengths)))
    # best[j, i]: fewest tokens for the i longest rows in j groups; cut[j, i]: where the last
    # group starts.
    best = np.full((k + 1, n + 1), np.iinfo(np.int64).max // 2)
    best[0, 0] = 0
    cut = np.zeros((k + 1, n + 1), np.int64)
    for j in range(1, k + 1):
        for i in range(1, n + 1):
            costs = [best[j - 1, m] + (i - m) * sorted_len[m] for m in range(i)]
            cut[j, i] = int(np.argmin(costs))
            best[j, i] = costs[cut[j, i]]
    j = int(np.argmin(best[1:, n])) + 1  # the first (fewest groups) of the minima
    bounds, i = [], n
    while j:
        bounds.append((cut[j, i], i))
        i, j = cut[j, i], j - 1
    return [(order[a:b], int(sorted_len[a])) for a, b in reversed(bounds)]


def _grown_cache(cache, rows: int, width: int):
    """A batch-1 prefix KV cache broadcast to ``rows`` rows and ``width`` empty slots longer."""
    def grow(c):
        c = jnp.pad(c, ((0, 0), (0, 0), (0, width), (0, 0), (0, 0)))
        return jnp.broadcast_to(c, (c.shape[0], rows) + c.shape[2:])
    return jax.tree.map(grow, cache)


def _run_all_positions(inputs: dict, cfg: LlamaConfig, iv: Interventions, groups) -> jax.Array:
    """The masked layers over every prompt position: a shared prefix (``h_prefix``) once, batch
    1, then each prompt's own tokens attending to its keys and values; all prompts in one
    batch, or in the length groups of :func:`bucket_rows`. Returns the hidden states whose last
    position is each prompt's last token, ``[N, S, D]``, in the prompts' order."""
    valid, h_all = inputs["valid"], inputs["h"]
    p = inputs["h_prefix"].shape[1] if "h_prefix" in inputs else 0
    prefix_cache = None
    if p:
        _, prefix_cache = llama.step(inputs["params"], cfg, inputs["h_prefix"],
                                     jnp.arange(p, dtype=jnp.int32)[None],
                                     jnp.ones((1, p), bool), llama.init_cache(cfg, 1, p), 0, iv,
                                     embed_input=False, output="hidden")
    if groups is None:
        return _run_own_tokens(inputs, cfg, iv, prefix_cache, h_all, valid[:, p:])
    lasts = []
    for rows, width in groups:
        # Rows are left-padded: a group's first (own width − width) columns are padding in
        # every one of its rows.
        lasts.append(_run_own_tokens(inputs, cfg, iv, prefix_cache,
                                     h_all[rows][:, h_all.shape[1] - width:],
                                     valid[rows][:, valid.shape[1] - width:])[:, -1:])
    back = np.argsort(np.concatenate([rows for rows, _ in groups]))
    return jnp.concatenate(lasts)[back]


def _run_own_tokens(inputs: dict, cfg: LlamaConfig, iv: Interventions, prefix_cache, h_NxWxD,
                    own_valid_NxW) -> jax.Array:
    """The masked layers over prompts' own tokens ``[N, W, D]`` (left-padded), after the shared
    prefix's keys and values when there is one (``prefix_cache``, batch 1)."""
    if prefix_cache is None:
        h, _ = llama.run(inputs["params"], cfg, h_NxWxD, own_valid_NxW, output="hidden",
                         interventions=iv, embed_input=False)
        return h
    n, w = own_valid_NxW.shape
    p = prefix_cache[0].shape[2]
    rows_valid = jnp.concatenate([jnp.ones((n, p), bool), own_valid_NxW], 1)
    h, _ = llama.step(inputs["params"], cfg, h_NxWxD,
                      llama.positions_from_valid(rows_valid)[:, p:], rows_valid,
                      _grown_cache(prefix_cache, n, w), p, iv, embed_input=False,
                      output="hidden")
    return h


@functools.partial(jax.jit, static_argnums=(1,))
def _kv_cache(params, cfg, h_NxTxD, valid_NxT):
    n, t, _ = h_NxTxD.shape
    _, cache = llama.step(params, cfg, h_NxTxD, llama.positions_from_valid(valid_NxT),
                          valid_NxT, llama.init_cache(cfg, n, t), 0, embed_input=False,
                          output="hidden")
    return cache


def _check_targets(targets, prompts: Prompts) -> jax.Array:
    targets = jnp.asarray(targets, jnp.int32)
    if targets.shape != (prompts.num,):
        raise ValueError(f"targets must have shape ({prompts.num},) (one token per prompt), "
                         f"got {tuple(targets.shape)}.")
    return targets


def target_readout(logits_NxV, targets_N):
    """``[N, 2]``: (target logit − the best other logit, log-probability of the target)."""
    target = jnp.take_along_axis(logits_NxV, targets_N[:, None], axis=-1)[:, 0]
    is_target = jnp.arange(logits_NxV.shape[-1])[None, :] == targets_N[:, None]
    margin = target - jnp.where(is_target, -jnp.inf, logits_NxV).max(axis=-1)
    logp = target - jax.nn.logsumexp(logits_NxV, axis=-1)
    return jnp.stack([margin, logp], axis=-1)


def target_rule(name: str = "top1") -> Rule:
    """Top-1 correctness read from :func:`target_readout` outputs (targets live in the site).

    Hard: the target is the unique arg-max (a tie is not a correct answer, as in
    ``bablate.rules.top1``); smooth: the target's softmax probability.
    """
    return rules.custom(lambda out, _: (out[:, 0] > 0).astype(jnp.float32),
                        soft_fn=lambda out, _: jnp.exp(out[:, 1]), name=name)


def evaluate_masks(site: Site, inputs: dict, masks_MxD: ArrayLike, key: jax.Array | None = None
                   ) -> jax.Array:
    """The site's outputs for a few masks, ``[M, ...]`` (direct, no task needed).

    Next-token logits ``[M, N, vocab]`` for the mask-aware sites of :func:`build_site` and the
    cached ones of :func:`build_mlp_site` (``[M, N, 2]`` with ``targets``; ``key`` draws the
    permutation of resample ablation). The masks go through the library's one evaluator
    (:func:`bablate.tasks.outputs_evaluator`), one after another.
    """
    data: dict[str, Any] = {"inputs": inputs}
    if site.prefix is not None:  # a cached site
        act = jax.jit(site.prefix)(inputs)
        data.update(act=act, value=ablation_value(site, act,
                                                  jax.random.key(0) if key is None else key))
    return outputs_evaluator(site)(data, jnp.asarray(masks_MxD, jnp.float32))
