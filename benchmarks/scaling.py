"""Scaling of bablate's masked evaluator (``Task.log_odds``): throughput (masks × examples per
second) against the number of masks, the number of examples, the chunk size (masks per jitted
call) and the number of devices.

Devices: each device count runs in a subprocess with ``--cpu-devices N``
(``bablate.sharding.use_cpu_devices``), so the masks are split over N CPU devices through the
same ``jax.sharding`` code path a GPU/TPU mesh uses. CPU devices share the machine's cores: up
to the core count they put idle cores to work (XLA:CPU runs most of one device's program on
one thread), beyond it they add overhead. On a GPU host the subprocesses see the GPUs (the
setting only affects the CPU platform).

    python benchmarks/scaling.py                              # toy site, all four sweeps
    python benchmarks/scaling.py --model rnn --sweeps masks,devices
    python benchmarks/scaling.py --quick
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import base_parser, build, emit, log, make_task, parse_args, random_masks, time_fn

MODELS = {"toy": {"n": 100, "m": 20}, "rnn": {"hidden": 12, "length": 32},
          "rnn128": {"hidden": 128, "length": 32},
          "mlp": {"n_in": 64, "hidden": 512, "classes": 10}}


def measure(model_name: str, num_masks: int, examples: int, chunk: int, args) -> dict:
    kind = "rnn" if model_name.startswith("rnn") else model_name
    model = build(kind, examples=examples, seed=args.seed, **MODELS[model_name])
    task = make_task(model)
    masks = random_masks(num_masks, model["num_units"], args.seed)
    t = time_fn(lambda: task.log_odds(masks, chunk_size=chunk), repeat=args.repeat,
                min_seconds=args.min_seconds)
    rate = num_masks * examples / t["median_s"]
    return {"sizes": {**model["sizes"], "units": model["num_units"], "masks": num_masks,
                      "examples": examples, "chunk_size": chunk},
            "seconds": t["median_s"], "first_call_s": t["first_call_s"],
            "throughput": rate, "masks_per_s": num_masks / t["median_s"]}


def sweep(name: str, values, make_point, args) -> None:
    first = None
    for v in values:
        log(f"{name} = {v}")
        rec = make_point(v)
        first = first or rec["throughput"]
        emit({"bench": "scaling", "case": f"{args.model}_{name}_{v}", "sweep": name,
              "value": v, **rec, "ratio": {"vs_first_point": rec["throughput"] / first}})


def device_worker(args) -> None:
    import jax

    rec = measure(args.model, args.masks, args.examples, args.chunk_size, args)
    rec["worker_device_count"] = jax.device_count()
    print(json.dumps(rec), flush=True)


def devices_sweep(counts, args) -> None:
    first = None
    for n in counts:
        log(f"devices = {n} (subprocess)")
        # bablate.sharding.use_cpu_devices(n) in the worker (it overrides a device count
        # forced in XLA_FLAGS, which CI sets to 4).
        cmd = [sys.executable, __file__, "--worker-devices", "--cpu-devices", str(n),
               "--model", args.model, "--masks", str(args.masks), "--examples",
               str(args.examples), "--chunk-size", str(args.chunk_size), "--repeat",
               str(args.repeat), "--min-seconds", str(args.min_seconds), "--seed", str(args.seed)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        first = first or rec["throughput"]
        emit({"bench": "scaling", "case": f"{args.model}_devices_{n}", "sweep": "devices",
              "value": n, "cpu_devices": n, **rec,
              "ratio": {"vs_first_point": rec["throughput"] / first},
              "note": "CPU devices share the machine's cores: beyond the core count, overhead"})


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--model", default="toy", choices=list(MODELS))
    p.add_argument("--sweeps", default="masks,examples,chunk,devices")
    p.add_argument("--masks", type=int, default=1024, help="masks for the fixed-M sweeps")
    p.add_argument("--examples", type=int, default=1024, help="examples for fixed-N sweeps")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--mask-values", default="16,64,256,1024,4096")
    p.add_argument("--example-values", default="64,256,1024,4096")
    p.add_argument("--chunk-values", default="8,32,128,512,2048")
    p.add_argument("--device-values", default="1,2,4,8")
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--worker-devices", action="store_true", help=argparse_hidden())
    args = parse_args(p)
    if args.model.startswith("rnn") and args.examples == 1024:
        args.examples = 64  # sequences of 32 tokens
    if args.worker_devices:
        device_worker(args)
        return
    if args.quick:
        args.repeat, args.min_seconds, args.masks, args.examples = 1, 0.0, 64, 64
        args.mask_values, args.example_values = "16,64", "32,64"
        args.chunk_values, args.device_values = "16,64", "2"
    sweeps = args.sweeps.split(",")
    ints = lambda s: [int(v) for v in s.split(",")]
    if "masks" in sweeps:
        sweep("masks", ints(args.mask_values),
              lambda m: measure(args.model, m, args.examples, args.chunk_size, args), args)
    if "examples" in sweeps:
        sweep("examples", ints(args.example_values),
              lambda n: measure(args.model, args.masks, n, args.chunk_size, args), args)
    if "chunk" in sweeps:
        sweep("chunk", ints(args.chunk_values),
              lambda c: measure(args.model, args.masks, args.examples, c, args), args)
    if "devices" in sweeps:
        devices_sweep(ints(args.device_values), args)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
