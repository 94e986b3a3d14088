"""Sampling continuations from the LLaMA (the LLM study's interventions): the top-k threshold
and the batch width.

Two cases, each timed side by side in one run:

* ``top_k_sampling``: one sampling step, the vocabulary masked below the k-th largest logit
  read as ``top_k(x, k)[0][:, -1:]`` (``slice``: on CPU, XLA folds that slice into the
  top-k's own and sorts the whole vocabulary instead) or as the ``min`` of the top k (the same
  value), then a draw over the whole vocabulary; against a draw among the k largest only
  (``among_k``, the same distribution, what ``llama_generate.generate`` does). ``ratio``
  gives both over ``among_k``, by wall and by CPU time.
* ``generate``: ``llama_generate.generate`` with top-k sampling and one key per row, at
  several batch widths, on a random model of SmolLM2-135M's shape;
  ``ratio.row_cost_vs_widest`` is the cost of a row at each width over its cost at the widest
  (why the study samples every arm in one batch).

    python benchmarks/llm_sampling.py            # SmolLM2's shape, 48 tokens, batches 8..160
    python benchmarks/llm_sampling.py --quick    # a tiny model, seconds
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from common import base_parser, emit, log, parse_args, time_fn

from bablate.models import llama, llama_generate

SMOLLM2 = llama.LlamaConfig(vocab_size=49152, num_layers=30, width=576, mlp_width=1536,
                            num_heads=9, num_kv_heads=3, rope_base=100000.0, norm_eps=1e-5)
TINY = llama.LlamaConfig(vocab_size=4096, num_layers=2, width=64, mlp_width=128, num_heads=4,
                         num_kv_heads=2, rope_base=10000.0, norm_eps=1e-5)


def top_k_sampling(args, vocab: int, widths: list[int], k: int = 50) -> None:
    """One top-k sampling step (one key per row) three ways: the vocabulary masked below the
    k-th largest logit read by slicing (``slice``) or by ``min`` (``min``), then a draw over
    the whole vocabulary; or a draw among the k largest only (``among_k``, what
    ``llama_generate.generate`` does). All three sample the same distribution."""
    def masked(kth_of):
        def step(x, key):
            kth = kth_of(jax.lax.top_k(x, k)[0])
            return jax.random.categorical(key, jnp.where(x < kth, -jnp.inf, x), axis=-1)
        return jax.jit(jax.vmap(step))

    def among(x, key):
        values, index = jax.lax.top_k(x, k)
        return index[jax.random.categorical(key, values, axis=-1)]

    ways = {"slice": masked(lambda v: v[-1:]),
            "min": masked(lambda v: v.min(axis=-1, keepdims=True)),
            "among_k": jax.jit(jax.vmap(among))}
    kth_slice = jax.jit(lambda x: jax.lax.top_k(x, k)[0][:, -1:])
    kth_min = jax.jit(lambda x: jax.lax.top_k(x, k)[0].min(axis=-1, keepdims=True))
    for b in widths:
        x = jax.random.normal(jax.random.key(args.seed), (b, vocab)) * 3.0
        keys = jax.random.split(jax.random.key(args.seed + 1), b)
        same = bool(np.array_equal(kth_slice(x), kth_min(x)))
        t = {name: time_fn(lambda f=f, x=x, keys=keys: f(x, keys), repeat=args.repeat,
                           min_seconds=0.5) for name, f in ways.items()}
        log(f"top-k sampling b={b}: " + ", ".join(f"{n} {r['median_s'] * 1e3:.1f} ms"
                                                 for n, r in t.items()))
        emit({"bench": "llm_sampling", "case": "top_k_sampling",
              "sizes": {"rows": b, "vocab": vocab, "k": k},
              "throughput": b / t["among_k"]["median_s"], "same_kth": same, "results": t,
              "ratio": {f"{n}_vs_among_k{c}": t[n][m] / t["among_k"][m]
                        for n in ("slice", "min")
                        for c, m in (("", "median_s"), ("_cpu", "cpu_median_s"))}})


def generate(args, cfg: llama.LlamaConfig, widths: list[int], prompt: int, tokens: int) -> None:
    params = llama.init_params(cfg, jax.random.key(args.seed), scale=0.05)
    rng = np.random.default_rng(args.seed)
    widest = max(widths)
    ids = jnp.asarray(rng.integers(3, cfg.vocab_size, (widest, prompt)).astype(np.int32))
    valid = jnp.ones(ids.shape, bool)
    keys = jax.random.split(jax.random.key(args.seed), widest)
    timed = {}
    for b in widths:
        run = lambda b=b: llama_generate.generate(params, cfg, ids[:b], valid[:b], keys[:b],
                                         max_new=tokens, temperature=0.8, top_k=50)
        timed[b] = time_fn(run, repeat=args.repeat, warmup=1)
        log(f"generate b={b}: {timed[b]['median_s']:.2f} s "
            f"({timed[b]['median_s'] / b * 1e3:.0f} ms a row)")
    row = {b: t["median_s"] / b for b, t in timed.items()}
    row_cpu = {b: t["cpu_median_s"] / b for b, t in timed.items()}
    emit({"bench": "llm_sampling", "case": "generate",
          "sizes": {"widths": widths, "prompt": prompt, "new_tokens": tokens,
                    "layers": cfg.num_layers, "width": cfg.width, "vocab": cfg.vocab_size},
          "throughput": widest / timed[widest]["median_s"],
          "results": {str(b): {**t, "seconds_per_row": row[b]} for b, t in timed.items()},
          "ratio": {**{f"row_cost_{b}_vs_{widest}": row[b] / row[widest] for b in widths},
                    **{f"row_cost_{b}_vs_{widest}_cpu": row_cpu[b] / row_cpu[widest]
                       for b in widths}}})


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[8, 30, 80, 160])
    p.add_argument("--tokens", type=int, default=48, help="new tokens per row")
    args = parse_args(p)
    if args.quick:
        args.repeat = 1
        top_k_sampling(args, 4096, [8])
        generate(args, TINY, [2, 4], prompt=8, tokens=4)
        return
    top_k_sampling(args, SMOLLM2.vocab_size, [8, 30, 210])
    generate(args, SMOLLM2, sorted(args.widths), prompt=17, tokens=args.tokens)


if __name__ == "__main__":
    main()
