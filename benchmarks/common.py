"""Shared pieces of the benchmark scripts: timing, JSON-line output, machine info, and the
benchmark models (toy, MLP, paper RNN, one LLaMA block) written once as numpy weights so the
JAX and PyTorch versions run the very same network on the very same data.

Every script prints one JSON object per line on stdout (progress goes to stderr), so results
can be collected with ``python benchmarks/x.py > x.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate import sharding
from bablate.testbeds import llama as llama_testbed

# ---------------------------------------------------------------------------------------------
# Output and timing
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress to stderr (stdout carries only JSON lines)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_count() -> int:
    """Cores this process may use (the affinity mask when the OS offers one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def machine_info() -> dict:
    """What ran the benchmark: cores, load, jax version/backend/devices, torch if present."""
    info = {
        "cpu_count": cpu_count(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_count": jax.device_count(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def emit(record: dict) -> None:
    """Prints one JSON line: the record plus the machine it ran on."""
    out = {**record, "machine": machine_info()}
    print(json.dumps(out, default=_jsonable), flush=True)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def block(x):
    """Waits for every JAX array in ``x`` (no-op for numpy / torch values)."""
    return jax.block_until_ready(x)


def time_fn(fn: Callable[[], object], repeat: int = 3, warmup: int = 1,
            min_seconds: float = 0.0) -> dict:
    """Median wall time (and CPU time of the process, all threads) of ``fn()`` over ``repeat``
    runs after ``warmup`` runs.

    ``fn`` must return something :func:`block` can wait on, so asynchronous dispatch is timed
    to completion. ``min_seconds`` adds repeats until that much time has been spent, which keeps
    very fast cases from being one noisy sample.
    """
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        block(fn())
        if i == 0:
            first = time.perf_counter() - t0
    times, cpu_times = [], []
    spent = 0.0
    while len(times) < repeat or spent < min_seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        block(fn())
        dt = time.perf_counter() - t0
        cpu_times.append(time.process_time() - c0)  # all threads of this process
        times.append(dt)
        spent += dt
        if len(times) >= 100 * max(repeat, 1):
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "cpu_median_s": statistics.median(cpu_times), "repeats": len(times),
            "first_call_s": first}


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one repeat: a smoke test that finishes in seconds")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per case (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="JAX CPU devices to split masks and MCMC chains over "
                        "(bablate.sharding.use_cpu_devices; 1 = JAX's single device). Default, "
                        "as launch.py: one per core, unless XLA_FLAGS forces a host device "
                        "count. The JSON's machine.device_count records it.")
    return p


def parse_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the flags and applies ``--cpu-devices`` before JAX starts its backend."""
    args = p.parse_args()
    if args.cpu_devices is not None and args.cpu_devices < 1:
        p.error(f"--cpu-devices must be at least 1, got {args.cpu_devices}")
    forced = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if args.cpu_devices is not None or not forced:
        sharding.use_cpu_devices(args.cpu_devices)
    return args


def torch_or_none(disabled: bool = False, threads: int | None = None):
    """``torch`` with its thread count set to the cores JAX uses (or ``threads``), or None if
    torch is not installed."""
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        log("torch is not installed: PyTorch baselines skipped (pip install -e '.[bench]')")
        return None
    torch.set_num_threads(threads or cpu_count())
    return torch


# ---------------------------------------------------------------------------------------------
# Measured matmul peak (float32) of this machine
# ---------------------------------------------------------------------------------------------


def jax_matmul_peak(size: int = 2048, repeat: int = 5) -> dict:
    """Achieved FLOP/s of one large float32 matmul in JAX (the machine's practical peak)."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((size, size), np.float32))
    b = jnp.asarray(rng.standard_normal((size, size), np.float32))
    mm = jax.jit(jnp.matmul)
    t = time_fn(lambda: mm(a, b), repeat=repeat, warmup=2)
    return {"size": size, "flops_per_s": 2.0 * size**3 / t["min_s"], **t}


def torch_matmul_peak(torch, size: int = 2048, repeat: int = 5) -> dict:
    """Achieved FLOP/s of one large float32 matmul in PyTorch."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    with torch.inference_mode():
        t = time_fn(lambda: torch.matmul(a, b), repeat=repeat, warmup=2)
    return {"size": size, "flops_per_s": 2.0 * size**3 / t["min_s"], **t}


# ---------------------------------------------------------------------------------------------
# Benchmark models: numpy weights + JAX functions + bablate sites
# ---------------------------------------------------------------------------------------------
#
# Each builder returns a dict with
#   params: numpy weights (shared with the PyTorch versions in torch_baselines.py)
#   inputs: numpy inputs; targets: numpy int labels (the intact network's own arg-max, so the
#     intact network is right on every example and the AMD is well defined)
#   site: the bablate Site; num_units: d; examples: N
#   flops_full / flops_suffix: matmul FLOPs per example of the whole forward pass and of the
#     part from the site onward (what a cached evaluator must recompute per mask)
#   kind: "toy" | "mlp" | "rnn" | "llama"


def _dense_init(rng, fan_in: int, fan_out: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal((fan_in, fan_out)) * scale / np.sqrt(fan_in)).astype(np.float32)


def toy_model(n: int = 100, m: int = 20, examples: int = 1024, density: float = 0.1,
              seed: int = 0) -> dict:
    """Toy model of superposition: h = W x (site, m units), x' = ReLU(Wᵀ W x + b).

    Task: the arg-max feature of the reconstruction (top-1 over the n outputs).
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, n)) * np.sqrt(2.0 / (m + n))).astype(np.float32)  # xavier
    b = np.zeros((n,), np.float32)
    active = rng.random((examples, n)) < density
    x = (rng.random((examples, n)) * active).astype(np.float32)
    params = {"w": w, "b": b}
    wj, bj = jnp.asarray(w), jnp.asarray(b)

    def prefix(x_NxN):
        return x_NxN @ wj.T

    def suffix(h_NxM, x_NxN):
        return jax.nn.relu(h_NxM @ wj + bj[None, :])

    site = bb.Site.from_functions("hidden", m, prefix, suffix)
    targets = np.asarray(jnp.argmax(suffix(prefix(jnp.asarray(x)), None), -1))
    flops = 2 * n * m
    return {"kind": "toy", "params": params, "inputs": x, "targets": targets, "site": site,
            "num_units": m, "examples": examples, "flops_full": 2 * flops,
            "flops_suffix": flops, "sizes": {"n": n, "m": m}}


def mlp_model(n_in: int = 64, hidden: int = 512, classes: int = 10, examples: int = 512,
              seed: int = 0) -> dict:
    """A ReLU MLP x -> ReLU(x W1 + b1) (site, ``hidden`` units) -> W2 + b2 logits."""
    rng = np.random.default_rng(seed)
    params = {"w1": _dense_init(rng, n_in, hidden, np.sqrt(2.0)),
              "b1": np.zeros((hidden,), np.float32),
              "w2": _dense_init(rng, hidden, classes),
              "b2": np.zeros((classes,), np.float32)}
    x = rng.standard_normal((examples, n_in)).astype(np.float32)
    p = {k: jnp.asarray(v) for k, v in params.items()}

    def prefix(x_NxI):
        return jax.nn.relu(x_NxI @ p["w1"] + p["b1"][None, :])

    def suffix(h_NxH, x_NxI):
        return h_NxH @ p["w2"] + p["b2"][None, :]

    site = bb.Site.from_functions("hidden", hidden, prefix, suffix)
    targets = np.asarray(jnp.argmax(suffix(prefix(jnp.asarray(x)), None), -1))
    return {"kind": "mlp", "params": params, "inputs": x, "targets": targets, "site": site,
            "num_units": hidden, "examples": examples,
            "flops_full": 2 * (n_in * hidden + hidden * classes),
            "flops_suffix": 2 * hidden * classes,
            "sizes": {"n_in": n_in, "hidden": hidden, "classes": classes}}


def rnn_model(hidden: int = 12, vocab: int = 14, length: int = 32, examples: int = 64,
              seed: int = 0) -> dict:
    """The chunk paper's RNN: c = [onehot(x_t); h_{t-1}], h_t = c Wh + bh (linear),
    logits_t = c Wo + bo; site = the hidden units, masked at every step (in place).

    Task: next-token top-1 at every position (targets = the intact network's predictions).
    ``examples`` counts sequences of ``length`` tokens.
    """
    rng = np.random.default_rng(seed)
    fan_in = vocab + hidden
    params = {"wh": _dense_init(rng, fan_in, hidden, 0.9), "bh": np.zeros((hidden,), np.float32),
              "wo": _dense_init(rng, fan_in, vocab), "bo": np.zeros((vocab,), np.float32)}
    tokens = rng.integers(0, vocab, (examples, length)).astype(np.int32)
    p = {k: jnp.asarray(v) for k, v in params.items()}

    def apply(tokens_NxT, ablate):
        onehot = jax.nn.one_hot(tokens_NxT, vocab, dtype=jnp.float32)  # [N, T, V]

        def step(h_prev, x_NxV):
            c = jnp.concatenate([x_NxV, h_prev], axis=-1)
            h = ablate(c @ p["wh"] + p["bh"][None, :])
            return h, c @ p["wo"] + p["bo"][None, :]

        h0 = jnp.zeros((tokens_NxT.shape[0], hidden), jnp.float32)
        _, logits_TxNxV = jax.lax.scan(step, h0, jnp.swapaxes(onehot, 0, 1))
        return jnp.swapaxes(logits_TxNxV, 0, 1).reshape(-1, vocab)  # [N*T, V]

    site = bb.Site.in_place("hidden", hidden, apply)
    targets = np.asarray(jnp.argmax(apply(jnp.asarray(tokens), lambda h: h), -1))
    flops = length * 2 * fan_in * (hidden + vocab)
    return {"kind": "rnn", "params": params, "inputs": tokens, "targets": targets, "site": site,
            "num_units": hidden, "examples": examples, "flops_full": flops,
            "flops_suffix": flops, "sizes": {"hidden": hidden, "vocab": vocab, "length": length}}


# SmolLM2-135M block sizes (DESIGN §3): width 576, MLP 1536, 9 query / 3 KV heads of 64.
LLAMA_SIZES = {"width": 576, "mlp": 1536, "heads": 9, "kv_heads": 3, "rope_base": 1e5,
               "eps": 1e-5}


def _rms_norm(x, w, eps):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope_tables(length: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(length)[:, None] * inv[None, :]                  # [T, K/2]
    ang = np.concatenate([ang, ang], axis=-1)                         # rotate-half layout
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def llama_block(length: int = 32, examples: int = 8, readout: int = 1024, seed: int = 0,
                **sizes) -> dict:
    """One LLaMA block with random weights of SmolLM2's sizes, then a final RMSNorm and a
    ``readout``-way linear head. Site = the MLP neurons (silu(x Wg) * (x Wu), d = 1536), cached.

    Inputs are residual-stream vectors ``[N, T, width]`` (as if from the layers below);
    the task is top-1 of the head at every position (targets = intact predictions).
    """
    s = {**LLAMA_SIZES, **sizes}
    D, F, H, KV = s["width"], s["mlp"], s["heads"], s["kv_heads"]
    K = D // H
    rng = np.random.default_rng(seed)
    params = {"attn_norm": np.ones((D,), np.float32), "mlp_norm": np.ones((D,), np.float32),
              "final_norm": np.ones((D,), np.float32),
              "wq": _dense_init(rng, D, H * K), "wk": _dense_init(rng, D, KV * K),
              "wv": _dense_init(rng, D, KV * K), "wo": _dense_init(rng, H * K, D),
              "wg": _dense_init(rng, D, F), "wu": _dense_init(rng, D, F),
              "wd": _dense_init(rng, F, D), "head": _dense_init(rng, D, readout)}
    cos, sin = _rope_tables(length, K, s["rope_base"])
    params["cos"], params["sin"] = cos, sin
    x = rng.standard_normal((examples, length, D)).astype(np.float32)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    eps = s["eps"]

    def rope(q_NxTxHxK):
        half = K // 2
        rot = jnp.concatenate([-q_NxTxHxK[..., half:], q_NxTxHxK[..., :half]], axis=-1)
        return q_NxTxHxK * p["cos"][None, :, None, :] + rot * p["sin"][None, :, None, :]

    def attention_out(x_NxTxD):
        n, t, _ = x_NxTxD.shape
        h = _rms_norm(x_NxTxD, p["attn_norm"], eps)
        q = rope((h @ p["wq"]).reshape(n, t, H, K))
        k = rope((h @ p["wk"]).reshape(n, t, KV, K))
        v = (h @ p["wv"]).reshape(n, t, KV, K)
        k = jnp.repeat(k, H // KV, axis=2)
        v = jnp.repeat(v, H // KV, axis=2)
        scores = jnp.einsum("nthk,nshk->nhts", q, k) / np.sqrt(K)
        causal = jnp.tril(jnp.ones((t, t), bool))
        scores = jnp.where(causal[None, None], scores, -1e30)
        att = jnp.einsum("nhts,nshk->nthk", jax.nn.softmax(scores, -1), v).reshape(n, t, H * K)
        return x_NxTxD + att @ p["wo"]

    def prefix(x_NxTxD):
        h1 = attention_out(x_NxTxD)
        h = _rms_norm(h1, p["mlp_norm"], eps)
        return jax.nn.silu(h @ p["wg"]) * (h @ p["wu"])              # [N, T, F]

    def suffix(act_NxTxF, x_NxTxD):
        # The residual stream before the MLP does not depend on the mask; under vmap over masks
        # it stays unbatched, i.e. it is computed once per evaluator call, not once per mask.
        h1 = attention_out(x_NxTxD)
        h2 = h1 + act_NxTxF @ p["wd"]
        logits = _rms_norm(h2, p["final_norm"], eps) @ p["head"]
        return logits.reshape(-1, readout)

    site = bb.Site.from_functions("mlp_neurons", F, prefix, suffix)
    xj = jnp.asarray(x)
    targets = np.asarray(jnp.argmax(suffix(prefix(xj), xj), -1))
    attn_flops = length * (2 * D * (H + 2 * KV) * K + 2 * H * K * D) + 2 * 2 * H * length**2 * K
    mlp_flops = length * 2 * D * F * 3
    head_flops = length * 2 * D * readout
    return {"kind": "llama", "params": params, "inputs": x, "targets": targets, "site": site,
            "num_units": F, "examples": examples,
            "flops_full": attn_flops + mlp_flops + head_flops,
            "flops_suffix": length * 2 * F * D + head_flops,
            "sizes": {**s, "length": length, "readout": readout}}


def build(kind: str, **kwargs) -> dict:
    """A benchmark model by name."""
    builders = {"toy": toy_model, "mlp": mlp_model, "rnn": rnn_model, "llama": llama_block}
    if kind not in builders:
        raise ValueError(f"unknown benchmark model {kind!r}; choose one of {list(builders)}.")
    return builders[kind](**kwargs)


def make_task(model: dict, name: str | None = None) -> bb.Task:
    """The bablate task of a benchmark model: top-1 against the intact predictions."""
    return bb.Task.build(model["site"], model["inputs"], bb.rules.top1(model["targets"]),
                         name=name or model["kind"], check_intact=False)


def random_masks(num_masks: int, num_units: int, seed: int = 0, keep: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return (rng.random((num_masks, num_units)) < keep).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The LLM study's concept tasks
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LLMAblation:
    """The llm_concepts study's ablation settings (its quick variant by default), with which
    the LLM benchmarks build its concept tasks; benchmarks import no study, and
    tests/test_benchmarks.py checks these against the study's variants."""
    head_layers: tuple[int, ...] = tuple(range(30))
    neuron_layer: int = 20
    max_prompts: int = 32
    positions: str = "last"
    readout: str = "target"
    matmuls: str = "float32"
    length_buckets: int = 1


LLM_QUICK = LLMAblation()
LLM_FULL = LLMAblation(max_prompts=24, positions="all", readout="logits", matmuls="bfloat16")


def llm_concept_task(ac: LLMAblation, params: dict, cfg, tok, d, kind: str,
                     share_prefix: bool = True) -> tuple[bb.Task, int]:
    """The study's task of concept ``d`` on site ``kind`` ("heads": ``ac.head_layers``;
    "neurons": ``ac.neuron_layer``): :func:`bablate.testbeds.llama.concept_task`."""
    layers = ac.head_layers if kind == "heads" else (ac.neuron_layer,)
    return llama_testbed.concept_task(params, cfg, tok, d, kind, tuple(layers),
                                      max_prompts=ac.max_prompts, positions=ac.positions,
                                      readout=ac.readout, matmuls=ac.matmuls,
                                      length_buckets=ac.length_buckets, share_prefix=share_prefix)
