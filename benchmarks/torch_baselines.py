"""PyTorch reference implementations of the benchmark models and the two ways a PyTorch user
evaluates ablation masks today. Imported only by the benchmark scripts (torch is a
benchmark-only extra, never a dependency of bablate).

* **hook loop** — the usual approach: a forward hook on the site module zeroes the masked units
  and the whole network runs once per mask.
* **batch repeat** — the best a PyTorch user would do by hand: the batch is repeated once per
  mask (``[M * N, ...]``), the hook multiplies each copy by its own mask, and one forward pass
  evaluates a block of masks.

Both return P(correct | mask) with the same Beta(1, 1) smoothing as bablate, so their outputs are
checked against bablate's before anything is timed. The weights are the numpy arrays of
``common.py``'s builders, so every framework runs the same network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True))


class Site(nn.Identity):
    """Marks the site: hooks attach here (called once per forward, or per step in an RNN)."""


class Toy(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.w, self.b = nn.Parameter(_t(p["w"])), nn.Parameter(_t(p["b"]))
        self.site = Site()

    def forward(self, x):
        h = self.site(x @ self.w.T)
        return torch.relu(h @ self.w + self.b)


class MLP(nn.Module):
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

    def forward(self, x):
        return self.fc2(self.site(torch.relu(self.fc1(x))))


class RNN(nn.Module):
    """The paper RNN, stepped in Python as the reference code does; the hook fires every step."""

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


class LlamaBlock(nn.Module):
    """One LLaMA block (RMSNorm, RoPE rotate-half, GQA causal attention, SwiGLU) + head."""

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

    def forward(self, x):
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
        act = self.site(nn.functional.silu(h @ p["wg"]) * (h @ p["wu"]))
        x = x + act @ p["wd"]
        return (self._norm(x, p["final_norm"]) @ p["head"]).reshape(n * t, -1)


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


def _p_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Beta(1,1)-smoothed P(correct) of top-1 predictions, per block of rows: [M, R] -> [M]."""
    correct = (logits.argmax(-1) == targets).float()
    return (correct.sum(-1) + 1.0) / (correct.shape[-1] + 2.0)


def hook_loop(net: nn.Module, inputs, targets, masks) -> np.ndarray:
    """One forward pass per mask; a forward hook zeroes the masked units."""
    x, y = _t(inputs), _t(targets).long()
    current = {}
    handle = net.site.register_forward_hook(lambda mod, args, out: out * current["mask"])
    out = np.empty(len(masks), np.float32)
    try:
        with torch.inference_mode():
            for i, mask in enumerate(_t(masks)):
                current["mask"] = mask
                out[i] = _p_correct(net(x)[None], y[None])[0]
    finally:
        handle.remove()
    return out


def batch_repeat(net: nn.Module, inputs, targets, masks, masks_per_pass: int = 64) -> np.ndarray:
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
                out.append(_p_correct(logits.reshape(b, -1, logits.shape[-1]), y[None]))
    finally:
        handle.remove()
    return torch.cat(out).numpy()
