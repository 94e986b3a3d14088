"""Bablate sites inside a LLaMA: attention heads, MLP neurons, the residual stream.

Every site caches the residual stream entering its first ablated layer, so a mask only pays for
the layers from there on (all 30 for heads spread over the whole model, a few for a late MLP
layer). The cache travels in the site's ``inputs`` pytree (a jit argument, never a baked-in
constant), together with the params of the layers that run.

Masks reach the model as multiplicative :class:`~bablate.models.llama.Interventions`; an ablated
unit takes the value ``fill`` (0 for zero ablation, the mean over prompts and positions for mean
ablation), at every prompt position or only at the last one (``SiteSpec.positions``; the last-
position form reuses cached keys/values of the earlier positions, so a mask costs one token;
at every position, the tokens all prompts start with, such as a few-shot header, run once per
mask and the prompts' own tokens attend to them: :func:`shared_prefix`). The core sees a
mask-aware site (:meth:`bablate.Site.mask_aware`): the mask goes straight to the model, which
applies it in every ablated layer. Outputs are the next-token logits at the last prompt
position, ``[N, vocab]``, ready for ``bablate.rules.top1`` / ``smooth_top1``.

:func:`build_mlp_site` is the cached alternative for one layer's MLP neurons
(:meth:`bablate.Site.from_functions`): its prefix returns the MLP hidden activation itself and
its suffix runs the rest of the model from a given activation, so any linear basis
(``bablate.Basis``, a learned dictionary) can re-express that activation and masks act on codes.

The package's modules: prompts and intact passes (``_prompts``), the mask-aware sites
(``_sites``), the MLP site (``_mlp``); every public name is here.
"""

from bablate.llm._mlp import build_mlp_site, mlp_activations
from bablate.llm._prompts import (
    Prompts,
    collect_states,
    encode,
    next_token_logits,
    residual_cache,
    shared_prefix,
    word_token,
)
from bablate.llm._sites import (
    ABLATIONS,
    KINDS,
    SiteSpec,
    SlowBf16Warning,
    bf16_speedup_here,
    bucket_rows,
    build_site,
    evaluate_masks,
    target_readout,
    target_rule,
)

__all__ = [
    "ABLATIONS", "KINDS", "Prompts", "SiteSpec", "SlowBf16Warning", "bf16_speedup_here",
    "bucket_rows", "build_mlp_site", "build_site", "collect_states", "encode", "evaluate_masks",
    "mlp_activations", "next_token_logits", "residual_cache", "shared_prefix", "target_readout",
    "target_rule", "word_token",
]
