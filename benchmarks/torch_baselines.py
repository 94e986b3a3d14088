"""PyTorch reference implementations of the benchmark models and three ways a PyTorch user
evaluates ablation masks. Imported only by the benchmark scripts (torch is a benchmark-only
extra, never a dependency of bablate).

* **hook loop** — the usual approach: a forward hook on the site module zeroes the masked units
  and the whole network runs once per mask.
* **batch repeat** — the batch is repeated once per mask (``[M * N, ...]``), the hook
  multiplies each copy by its own mask, and one forward pass evaluates a block of masks.
* **cached repeat** — the fair hand-written equivalent of bablate's cached sites: the activation
  at the site (and whatever else the rest of the network reads that no mask changes) is computed
  once, then a block of masks multiplies it and only the rest of the network runs. A site inside
  a recurrence (the RNN) has no mask-free activation to cache: there it is batch repeat.

All three score top-1 exactly as ``bablate.rules.top1`` does (:func:`top1_correct`: the target
logit against the largest other one, a tie counted as wrong by default; no ``argmax``, which is
several times slower) and return P(correct | mask) with the same Beta(1, 1) smoothing, so their
outputs are checked equal to bablate's before anything is timed. The weights are the numpy
arrays of ``common.py``'s builders, so every framework runs the same network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# The tie conventions of bablate.rules.top1, restated here so the twin stays independent.
TIES = ("wrong", "correct")


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True))


class Site(nn.Identity):
    """Marks the site: hooks attach here (called once per forward, or per step in an RNN)."""


class Cached(nn.Module):
    """A network split at its site: ``prefix(x) -> (act, ctx)`` runs without any mask and
    ``suffix(act, ctx) -> logits`` runs the rest. ``act`` may carry leading mask axes
    ``[*B, N, ..., d]``; the logits are then ``[*B, rows, C]`` (``[rows, C]`` without them)."""

    cached = True

    def forward(self, x):
        act, ctx = self.prefix(x)
        return self.suffix(self.site(act), ctx)


class Toy(Cached):
    def __init__(self, p):
        super().__init__()
        self.w, self.b = nn.Parameter(_t(p["w"])), nn.Parameter(_t(p["b"]))
        self.site = Site()

    def prefix(self, x):
        return x @ self.w.T, None

    def suffix(self, h, ctx):
        return torch.relu(h @ self.w + self.b)


class MLP(Cached):
    def __init__(self, p):
        super().__init__()
        self.fc1 = nn.Linear(*p["w1"].shape)
        self.fc2 = nn.Linear(*p["w2"].shape)
        with torch.no_grad():
            self.fc1.weight.copy_(_t(p["w1"].T))
            self.fc1.bias.copy_(_t(p["b1"]))
            self.fc2.weight.copy_(_t(p["w2"].T))
            self.fc2.bias.copy_(_t(p["b2"]))
        self.site = Site()

    def prefix(self, x):
        return torch.relu(self.fc1(x)), None

    def suffix(self, h, ctx):
        return self.fc2(h)


class RNN(nn.Module):
    """The benchmark RNN, stepped in Python as the paper's reference code does; the hook fires
    every step. Raw logits, like ``common.rnn_model`` (bablate's own RNN adds a log-softmax,
    which changes no top-1 decision: neither side of the benchmark pays for it)."""

    cached = False  # the site is inside the recurrence: no activation is mask-free

    def __init__(self, p, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.cell = nn.Linear(*p["wh"].shape)
        self.out = nn.Linear(*p["wo"].shape)
        with torch.no_grad():
            self.cell.weight.copy_(_t(p["wh"].T))
            self.cell.bias.copy_(_t(p["bh"]))
            self.out.weight.copy_(_t(p["wo"].T))
            self.out.bias.copy_(_t(p["bo"]))
        self.site = Site()

    def forward(self, tokens):
        n, t = tokens.shape
        onehot = nn.functional.one_hot(tokens.long(), self.vocab).float()
        h = torch.zeros(n, self.cell.out_features)
        logits = []
        for i in range(t):
            c = torch.cat([onehot[:, i], h], dim=-1)
            h = self.site(self.cell(c))
            logits.append(self.out(c))
        return torch.stack(logits, dim=1).reshape(-1, self.vocab)


class LlamaBlock(Cached):
    """One LLaMA block (RMSNorm, RoPE rotate-half, GQA causal attention, SwiGLU) + head; the
    cache holds the MLP neurons and the residual stream entering the MLP."""

    def __init__(self, p, sizes):
        super().__init__()
        self.p = {k: _t(v) for k, v in p.items()}
        self.h, self.kv, self.eps = sizes["heads"], sizes["kv_heads"], sizes["eps"]
        self.site = Site()

    def _norm(self, x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def _rope(self, q):
        k = q.shape[-1]
        rot = torch.cat([-q[..., k // 2:], q[..., :k // 2]], dim=-1)
        return q * self.p["cos"][None, :, None, :] + rot * self.p["sin"][None, :, None, :]

    def prefix(self, x):
        p = self.p
        n, t, d = x.shape
        k_dim = d // self.h
        h = self._norm(x, p["attn_norm"])
        q = self._rope((h @ p["wq"]).view(n, t, self.h, k_dim)).transpose(1, 2)
        k = self._rope((h @ p["wk"]).view(n, t, self.kv, k_dim)).transpose(1, 2)
        v = (h @ p["wv"]).view(n, t, self.kv, k_dim).transpose(1, 2)
        k = k.repeat_interleave(self.h // self.kv, dim=1)
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + att.transpose(1, 2).reshape(n, t, d) @ p["wo"]
        h = self._norm(x, p["mlp_norm"])
        return nn.functional.silu(h @ p["wg"]) * (h @ p["wu"]), x

    def suffix(self, act, resid):
        p = self.p
        x = resid + act @ p["wd"]                      # broadcasts over leading mask axes
        logits = self._norm(x, p["final_norm"]) @ p["head"]
        return logits.reshape(*logits.shape[:-3], -1, logits.shape[-1])


def build(model: dict) -> nn.Module:
    """The PyTorch twin of a ``common.build`` model (same weights)."""
    kind, p = model["kind"], model["params"]
    if kind == "toy":
        net = Toy(p)
    elif kind == "mlp":
        net = MLP(p)
    elif kind == "rnn":
        net = RNN(p, model["sizes"]["vocab"])
    elif kind == "llama":
        net = LlamaBlock(p, model["sizes"])
    else:
        raise ValueError(f"no PyTorch twin for model kind {kind!r}.")
    return net.eval()


def top1_correct(logits: torch.Tensor, targets: torch.Tensor, ties: str = "wrong"
                 ) -> torch.Tensor:
    """Top-1 correctness of ``[R, C]`` logits as ``bablate.rules.top1(targets, ties)`` scores it.

    ``ties="wrong"``: correct when the target logit exceeds every other logit (a tie for the
    maximum is wrong); ``"correct"``: when it is at least the maximum. Overwrites the targets'
    entries of ``logits`` (with -inf, to take the largest other logit without a copy: the
    fastest exact form measured, ~3x an ``argmax``); pass logits you no longer need.
    """
    if ties not in TIES:
        raise ValueError(f"top1_correct: unknown ties={ties!r}; choose one of {TIES}.")
    index = targets[:, None]
    target = logits.gather(-1, index)[:, 0]
    if ties == "correct":
        return target >= logits.amax(-1)
    logits.scatter_(-1, index, float("-inf"))
    return target > logits.amax(-1)


def p_correct(logits: torch.Tensor, targets: torch.Tensor, ties: str = "wrong"
              ) -> torch.Tensor:
    """Beta(1,1)-smoothed P(correct) per mask: logits ``[M, R, C]``, targets ``[R]`` -> ``[M]``.
    Scores in place (see :func:`top1_correct`)."""
    m, rows, classes = logits.shape
    correct = top1_correct(logits.reshape(m * rows, classes), targets.repeat(m), ties)
    return (correct.reshape(m, rows).sum(-1, dtype=torch.float32) + 1.0) / (rows + 2.0)


def hook_loop(net: nn.Module, inputs, targets, masks, ties: str = "wrong") -> np.ndarray:
    """One forward pass per mask; a forward hook zeroes the masked units."""
    x, y = _t(inputs), _t(targets).long()
    current = {}
    handle = net.site.register_forward_hook(lambda mod, args, out: out * current["mask"])
    out = np.empty(len(masks), np.float32)
    try:
        with torch.inference_mode():
            for i, mask in enumerate(_t(masks)):
                current["mask"] = mask
                out[i] = p_correct(net(x)[None], y, ties)[0]
    finally:
        handle.remove()
    return out


def batch_repeat(net: nn.Module, inputs, targets, masks, masks_per_pass: int = 64,
                 ties: str = "wrong") -> np.ndarray:
    """The batch repeated once per mask, ``masks_per_pass`` masks per forward pass; the hook
    multiplies copy j of the batch by mask j (a broadcast over the example axes)."""
    x, y = _t(inputs), _t(targets).long()
    current = {}

    def hook(mod, args, out):
        m = current["mask"]                               # [B, d]
        shaped = out.reshape(m.shape[0], -1, *out.shape[1:])
        m = m.reshape(m.shape[0], *([1] * (shaped.ndim - 2)), m.shape[1])
        return (shaped * m).reshape(out.shape)

    handle = net.site.register_forward_hook(hook)
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(masks), masks_per_pass):
                block = _t(masks[start:start + masks_per_pass])
                b = block.shape[0]
                current["mask"] = block
                xb = x.repeat(b, *([1] * (x.ndim - 1)))
                logits = net(xb)
                out.append(p_correct(logits.reshape(b, -1, logits.shape[-1]), y, ties))
    finally:
        handle.remove()
    return torch.cat(out).numpy()


def site_cache(net: Cached, inputs) -> tuple:
    """The mask-free part of a cached twin, computed once: ``(act, ctx)`` of its prefix."""
    if not getattr(net, "cached", False):
        raise ValueError(f"{type(net).__name__} has no mask-free activation to cache (its site "
                         "is inside the network); use batch_repeat.")
    with torch.inference_mode():
        return net.prefix(_t(inputs))


def cached_repeat(net: Cached, cache: tuple, targets, masks, masks_per_pass: int = 64,
                  ties: str = "wrong") -> np.ndarray:
    """Masks applied to the cached site activation ``masks_per_pass`` at a time; only the
    suffix runs per block (``cache`` from :func:`site_cache`, built once, as bablate's
    ``Task.build`` caches its prefix once)."""
    act, ctx = cache
    y = _t(targets).long()
    out = []
    with torch.inference_mode():
        for start in range(0, len(masks), masks_per_pass):
            block = _t(masks[start:start + masks_per_pass])
            b = block.shape[0]
            masked = act[None] * block.reshape(b, *([1] * (act.ndim - 1)), block.shape[1])
            out.append(p_correct(net.suffix(masked, ctx), y, ties))
    return torch.cat(out).numpy()
