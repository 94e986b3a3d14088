"""Exact enumeration of all 2^d masks (``bb.infer(task, "exact")``) on the toy and RNN sites.

Reports the wall and CPU time (``time.process_time``, all threads) of the whole call (compile
included: the first call for a site and chunk compiles the chunked scorer, later tasks of the
same shape reuse it) and masks/s, plus masks × examples/s, with the load average before and
after. d = 16 and d = 20 give 2^16 and
2^20 masks; the toy model's hidden layer is the site (cached), the RNN's hidden units are
masked at every step (in place, nothing cached).

    python benchmarks/exact_enumeration.py                     # 2^16 and 2^20, toy and RNN
    python benchmarks/exact_enumeration.py --units 16 --rnn-examples 32 --chunk-size 16384
    python benchmarks/exact_enumeration.py --quick
"""

from __future__ import annotations

import os
import time

from common import base_parser, build, emit, log, make_task, parse_args

import bablate as bb


def run(kind: str, d: int, args) -> None:
    if kind == "toy":
        model = build("toy", n=args.toy_features, m=d, examples=args.toy_examples,
                      seed=args.seed)
    else:
        model = build("rnn", hidden=d, length=args.rnn_length, examples=args.rnn_examples,
                      seed=args.seed)
    task = make_task(model, f"{kind}{d}")
    log(f"exact {kind} d={d} N={model['examples']}")
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    post = bb.infer(task, "exact", max_units=20, chunk_size=args.chunk_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    masks = 2 ** d
    emit({"bench": "exact_enumeration", "case": f"{kind}_2^{d}", "model": kind,
          "sizes": {**model["sizes"], "units": d, "masks": masks, "examples": model["examples"],
                    "chunk_size": args.chunk_size, "cached": task.site.cached},
          "seconds": wall, "cpu_seconds": cpu, "loadavg_1m_before": load_before,
          "loadavg_1m_after": os.getloadavg()[0], "throughput": masks / wall,
          "masks_per_s": masks / wall,
          "mask_examples_per_s": masks * model["examples"] / wall,
          "ratio": {}, "entropy_bits": post.entropy_bits,
          "max_marginal": float(post.marginals.max())})


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--units", default="16,20", help="comma list of d (2^d masks)")
    p.add_argument("--models", default="toy,rnn")
    p.add_argument("--chunk-size", type=int, default=8192, help="masks per jitted call")
    p.add_argument("--toy-features", type=int, default=100)
    p.add_argument("--toy-examples", type=int, default=256)
    p.add_argument("--rnn-examples", type=int, default=16)
    p.add_argument("--rnn-length", type=int, default=16)
    args = parse_args(p)
    units = [int(u) for u in args.units.split(",")]
    if args.quick:
        units, args.toy_examples, args.rnn_examples, args.rnn_length = [8], 32, 4, 4
        args.chunk_size = 256
    for kind in args.models.split(","):
        for d in units:
            run(kind, d, args)


if __name__ == "__main__":
    main()
