"""Time to posterior for several tasks on one site: compiled programs shared across tasks.

A user's study builds many tasks on one site (a concept per task, a chunk per task, a held-out
split per task) with data of one shape. For each task this script times what the user waits
for: ``Task.build`` (prefix, rule checks, the intact network's log-odds), ``bb.infer(task,
method)``, and ``task.log_odds`` / ``task.p_correct`` on a batch of masks. Every task has its
own inputs (fresh random examples of the same shape) and its own targets (the intact network's
predictions on them), so nothing but the site is shared.

Two runs side by side in one process, on one site object each:

* ``shared``: the library as it is (programs cached by site and rule code, arrays as
  arguments), so only the first task compiles;
* ``cleared``: the same, with the program cache emptied before every task, i.e. every task
  compiles as before the cache existed.

``ratio.tasks_vs_one`` = time for all tasks ÷ time for the first task alone (target ≤ 1.5 for
10 tasks), wall and CPU time (``time.process_time``, all threads) side by side, with the
number of XLA compilations per task and the load average before and after.

    python benchmarks/compile_reuse.py                      # 10 tasks, toy and RNN, exact
    python benchmarks/compile_reuse.py --models rnn --tasks 10 --method mcmc
    python benchmarks/compile_reuse.py --quick
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from common import base_parser, build, emit, log, parse_args, random_masks
from jax import monitoring

import bablate as bb
from bablate import programs

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_COMPILES: list[float] = []


def _count(event: str, seconds: float, **_) -> None:
    if event == COMPILE_EVENT:
        _COMPILES.append(seconds)


def task_inputs(model: dict, index: int) -> np.ndarray:
    """Fresh inputs of the model's shape for task ``index`` (another split of the data)."""
    rng = np.random.default_rng(1000 + index)
    x = model["inputs"]
    if model["kind"] == "rnn":
        return rng.integers(0, model["sizes"]["vocab"], x.shape).astype(np.int32)
    return ((rng.random(x.shape) < 0.1) * rng.random(x.shape)).astype(np.float32)


def one_task(model: dict, index: int, masks: np.ndarray, args) -> dict:
    """Builds task ``index`` and computes its posterior, log-odds and P(correct)."""
    site = model["site"]
    x = task_inputs(model, index)
    outputs = np.asarray(jax.jit(lambda v: site.apply(v, lambda h: h))(x)) if not site.cached \
        else np.asarray(jax.jit(lambda v: site.suffix(site.prefix(v), v))(x))
    targets = outputs.argmax(-1)  # the intact network's own predictions (not timed)
    compiles0, wall0, cpu0 = len(_COMPILES), time.perf_counter(), time.process_time()
    task = bb.Task.build(site, x, bb.rules.top1(targets), name=f"task{index}")
    kw = {"max_units": 20} if args.method == "exact" else {
        "key": jax.random.key(index), "num_samples": args.mcmc_samples,
        "num_warmup": args.mcmc_samples // 5, "num_chains": 4}
    post = bb.infer(task, args.method, **kw)
    log_odds = task.log_odds(masks)
    p = task.p_correct(masks)
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
            "compiles": len(_COMPILES) - compiles0, "max_marginal": float(post.marginals.max()),
            "finite": bool(np.isfinite(log_odds).all() and np.isfinite(p).all())}


def run(kind: str, args) -> None:
    if kind == "toy":
        make = lambda: build("toy", n=args.toy_features, m=args.units,
                             examples=args.toy_examples, seed=args.seed)
    else:
        make = lambda: build("rnn", hidden=args.units, length=args.rnn_length,
                             examples=args.rnn_examples, seed=args.seed)
    masks = random_masks(args.masks, args.units, seed=args.seed)
    load_before = os.getloadavg()[0]
    results = {}
    for mode in ("shared", "cleared"):
        model = make()  # a site object of its own, so neither run reuses the other's programs
        programs.clear_cache()
        log(f"{kind} d={args.units}: {args.tasks} tasks, {mode}")
        per_task = []
        for i in range(args.tasks):
            if mode == "cleared":
                programs.clear_cache()
            per_task.append(one_task(model, i, masks, args))
        wall = [t["wall_s"] for t in per_task]
        cpu = [t["cpu_s"] for t in per_task]
        results[mode] = {"first_wall_s": wall[0], "first_cpu_s": cpu[0],
                         "total_wall_s": sum(wall), "total_cpu_s": sum(cpu),
                         "later_wall_s_mean": float(np.mean(wall[1:])) if len(wall) > 1 else None,
                         "compiles_per_task": [t["compiles"] for t in per_task],
                         "all_finite": all(t["finite"] for t in per_task),
                         "max_marginals": [t["max_marginal"] for t in per_task]}
    shared, cleared = results["shared"], results["cleared"]
    ratio = {"tasks_vs_one_wall": shared["total_wall_s"] / shared["first_wall_s"],
             "tasks_vs_one_cpu": shared["total_cpu_s"] / shared["first_cpu_s"],
             "cleared_tasks_vs_one_wall": cleared["total_wall_s"] / cleared["first_wall_s"],
             "cleared_tasks_vs_one_cpu": cleared["total_cpu_s"] / cleared["first_cpu_s"],
             "cleared_vs_shared_total_wall": cleared["total_wall_s"] / shared["total_wall_s"],
             "cleared_vs_shared_total_cpu": cleared["total_cpu_s"] / shared["total_cpu_s"]}
    emit({"bench": "compile_reuse", "case": f"{kind}_{args.method}_{args.tasks}_tasks",
          "model": kind, "method": args.method,
          "sizes": {**make()["sizes"], "units": args.units, "tasks": args.tasks,
                    "masks": args.masks,
                    "examples": args.toy_examples if kind == "toy" else args.rnn_examples},
          "throughput": args.tasks / shared["total_wall_s"], "results": results,
          "ratio": ratio, "loadavg_1m_before": load_before,
          "loadavg_1m_after": os.getloadavg()[0]})


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--models", default="toy,rnn")
    p.add_argument("--tasks", type=int, default=10, help="tasks on one site")
    p.add_argument("--method", default="exact", choices=("exact", "mcmc", "svi"))
    p.add_argument("--units", type=int, default=12, help="site units d (2^d masks for exact)")
    p.add_argument("--masks", type=int, default=256, help="masks for log_odds / p_correct")
    p.add_argument("--mcmc-samples", type=int, default=1000)
    p.add_argument("--toy-features", type=int, default=100)
    p.add_argument("--toy-examples", type=int, default=256)
    p.add_argument("--rnn-examples", type=int, default=16)
    p.add_argument("--rnn-length", type=int, default=16)
    args = parse_args(p)
    if args.quick:
        args.tasks, args.units, args.masks, args.mcmc_samples = 3, 6, 16, 50
        args.toy_examples, args.rnn_examples, args.rnn_length = 32, 4, 4
    monitoring.register_event_duration_secs_listener(_count)
    for kind in args.models.split(","):
        run(kind, args)


if __name__ == "__main__":
    main()
