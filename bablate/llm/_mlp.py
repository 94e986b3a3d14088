"""The cached site on one layer's MLP hidden activation (:func:`build_mlp_site`, any basis) and
that activation over prompts (:func:`mlp_activations`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from bablate.llm._prompts import Prompts
from bablate.llm._sites import (
    SiteSpec,
    _check_spec,
    _check_targets,
    _kv_cache,
    _warn_if_bf16_is_slow,
    target_readout,
)
from bablate.models import llama
from bablate.models.llama import LlamaConfig
from bablate.sites import Ablation, Basis, Site


def mlp_activations(params, cfg: LlamaConfig, prompts: Prompts, layer: int,
                    with_logits: bool = False):
    """The MLP hidden ``silu(gate)·up`` of one layer over the prompts, ``[N, T, mlp_width]``.

    With ``with_logits`` also the intact next-token logits ``[N, vocab]`` from the same forward
    pass (one pass serves both a dictionary fit and the choice of prompts the model gets right).
    """
    _check_spec(SiteSpec("neurons", (layer,)), cfg)
    return _mlp_pass(params, cfg, jnp.asarray(prompts.tokens), jnp.asarray(prompts.valid), layer,
                     with_logits)


@functools.partial(jax.jit, static_argnums=(1, 4, 5))
def _mlp_pass(params, cfg, tokens, valid, layer, with_logits):
    mid, nxt = _mid_and_next_impl(params, cfg, tokens, valid, layer)
    act = llama.mlp_hidden(llama.layer_params(params, layer), cfg, mid)
    if not with_logits:
        return act
    h, _ = llama.run(params, cfg, nxt, valid, start=layer + 1, output="hidden",
                     embed_input=False)
    return act, llama.unembed(params, cfg, h[:, -1])


def _mid_and_next_impl(params, cfg, tokens, valid, layer):
    """(residual after layer ``layer``'s attention, residual entering layer ``layer + 1``)."""
    h, _ = llama.run(params, cfg, tokens, valid, stop=layer, output="hidden")
    out, collected = llama.run(params, cfg, h, valid, start=layer, stop=layer + 1,
                               output="hidden", collect=("mid",), embed_input=False)
    return collected["mid"][0], out


_mid_and_next = jax.jit(_mid_and_next_impl, static_argnums=(1, 4))


def build_mlp_site(params, cfg: LlamaConfig, layer: int, prompts: Prompts, *,
                   positions: str = "last", ablation: Ablation = "zero",
                   basis: Basis | None = None, targets=None) -> tuple[Site, dict]:
    """A cached site on one layer's MLP hidden activation (works with any basis).

    The residual after layer ``layer``'s attention is computed once here (and, for
    ``positions="last"``, the keys/values of every later layer at every position). The site's
    prefix maps it to the MLP hidden ``[N, T', mlp_width]`` (T' = 1 for "last", the prompt length
    for "all"); the suffix adds ``down(hidden)`` back and runs layers ``layer + 1 …`` to the
    next-token logits ``[N, vocab]``. Unlike :func:`build_site` the core applies the mask, so
    ``basis`` (or ``dataclasses.replace(site, basis=...)``) re-expresses the activation in codes.

    Args:
        params: full-model params.
        cfg: full-model config.
        layer: the MLP layer.
        prompts: the dataset.
        positions: "last" (mask the last prompt position only; earlier positions keep their
            intact activations and cached keys/values) or "all" (every position).
        ablation: "zero", "mean" or "resample" (see :class:`bablate.Site`).
        basis: optional linear basis of the activation (default: the neurons).
        targets: optional target token per prompt ``[N]``. The site then reads out only what a
            next-token rule needs, ``[N, 2]`` = (target logit − max logit, log-probability of
            the target), for :func:`target_rule`: the same correctness as
            ``bablate.rules.top1`` on the full logits, but a mask's output is ~10⁴ times
            smaller, so the core evaluates many masks per batch and the model's weights are
            read once per batch instead of once per mask (on SmolLM2, 16 prompts, 2 CPU
            cores: 0.055 s instead of 0.11 s per mask).

    Returns:
        (site, inputs) for ``bablate.Task.build(site, inputs, rule)``.
    """
    spec = SiteSpec("neurons", (layer,), positions=positions)
    _check_spec(spec, cfg)
    _warn_if_bf16_is_slow(cfg)
    valid = jnp.asarray(prompts.valid)
    mid, nxt = _mid_and_next(params, cfg, jnp.asarray(prompts.tokens), valid, layer)
    rest = cfg.num_layers - layer - 1
    rest_cfg = cfg.replace(num_layers=rest)
    inputs = {"mid": mid, "valid": valid, "mlp": llama.layer_params(params, layer),
              "params": llama.layer_range(params, layer + 1, cfg.num_layers)}
    if positions == "last":
        inputs["mid"] = mid[:, -1:]
        if rest:
            inputs["cache"] = _kv_cache(inputs["params"], rest_cfg, nxt, valid)
    if targets is not None:
        inputs["targets"] = _check_targets(targets, prompts)

    def prefix(inputs):
        return llama.mlp_hidden(inputs["mlp"], cfg, inputs["mid"])

    def suffix(act, inputs):
        h = llama.mlp_residual(inputs["mlp"], cfg, inputs["mid"], act)
        if rest and positions == "last":
            valid = inputs["valid"]
            pos = llama.positions_from_valid(valid)[:, -1:]
            h, _ = llama.step(inputs["params"], rest_cfg, h, pos, valid, inputs["cache"],
                              valid.shape[1] - 1, embed_input=False, output="hidden")
        elif rest:
            h, _ = llama.run(inputs["params"], rest_cfg, h, inputs["valid"], output="hidden",
                             embed_input=False)
        logits = llama.unembed(inputs["params"], cfg, h[:, -1])
        if targets is None:
            return logits
        return target_readout(logits, inputs["targets"])

    site = Site.from_functions(f"mlp{spec.name.removeprefix('neurons')}", cfg.mlp_width,
                               prefix, suffix, ablation=ablation, basis=None)
    if basis is not None:
        site = dataclasses.replace(site, basis=basis, num_units=basis.num_units,
                                   name=f"{site.name}/{basis.name}")
    return site, inputs
