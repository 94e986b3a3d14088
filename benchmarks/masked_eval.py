"""Masked evaluation throughput (masks × examples per second) on the toy model, an MLP, the
paper RNN and one SmolLM2-sized LLaMA block, against PyTorch baselines scored the same way.

Per case, side by side in one process and on the same weights, data and masks:

* ``bablate``: ``Task.log_odds`` — the cached (prefix once per dataset), vmapped, jitted,
  blocked evaluator over ``[M, d]`` masks;
* ``jax_loop``: a Python loop calling the same jitted evaluator on one mask at a time;
* ``torch_hook``: PyTorch forward hooks zeroing units, one full forward pass per mask;
* ``torch_repeat``: PyTorch with the batch repeated once per mask (one pass per block of masks);
* ``torch_cached``: PyTorch batch-repeat from the cached site activation (computed once, as
  bablate's ``Task.build`` does; only the rest of the network runs per block of masks) — the
  fair hand-written equivalent. The RNN's site is inside the recurrence, so there it is
  ``torch_repeat`` (recorded as such, not timed twice).

Every PyTorch baseline scores top-1 as ``bablate.rules.top1`` does (target logit against the
largest other one, ties wrong; no ``argmax``) and is checked equal to bablate's P(correct) on
every mask before anything is timed. PyTorch runs at each ``--torch-threads`` count (entries
``torch_<baseline>_<n>t``); a baseline's headline ratio is against its best count (by wall time
for the wall ratio, by CPU time for the CPU ratio). Every entry reports achieved FLOP/s (matmul
FLOPs it executes: the part after the site where it caches, the whole network otherwise) as a
fraction of its framework's float32 matmul peak.

Gating (``gating.py``): the matmul peak of JAX and PyTorch is measured before and after each
case, and the CPUs' idle share for other processes is read from ``/proc/stat`` over it; a case
whose peaks moved by more than 20% or whose CPUs were < 80% idle is rerun once a 5 s window
finds them idle (``--attempts``; ``--retry-wait`` bounds the wait) and, if it never passes,
emitted with ``gate.quiet = false``: such a line is never quoted (``table.py`` leaves it out).

    python benchmarks/masked_eval.py                 # all cases (minutes on 2 cores)
    python benchmarks/masked_eval.py --cases toy_large,rnn128 --masks 512
    python benchmarks/masked_eval.py --quick         # smoke test
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time

import gating
import jax
import numpy as np
from common import (
    base_parser,
    build,
    emit,
    jax_matmul_peak,
    log,
    make_task,
    parse_args,
    random_masks,
    time_fn,
    torch_matmul_peak,
    torch_or_none,
)

# name -> (model kind, builder kwargs, masks)
CASES = {
    "toy_small": ("toy", {"n": 20, "m": 5, "examples": 1024}, 256),
    "toy_large": ("toy", {"n": 100, "m": 20, "examples": 1024}, 256),
    "mlp512": ("mlp", {"n_in": 64, "hidden": 512, "classes": 10, "examples": 512}, 256),
    "rnn12": ("rnn", {"hidden": 12, "length": 32, "examples": 64}, 256),
    "rnn128": ("rnn", {"hidden": 128, "length": 32, "examples": 64}, 256),
    "llama_mlp": ("llama", {"length": 32, "examples": 8, "readout": 1024}, 32),
}
QUICK = {
    "toy_large": ("toy", {"n": 100, "m": 20, "examples": 128}, 32),
    "rnn12": ("rnn", {"hidden": 12, "length": 8, "examples": 16}, 32),
}
BASELINES = ("hook", "repeat", "cached")
RNN_NOTE = ("raw logits on both sides: the benchmark RNN (JAX and PyTorch) drops the "
            "log-softmax that bablate's RNN model computes (no top-1 decision changes)")


@dataclasses.dataclass
class Case:
    """One case, built and checked once; its timings may be repeated until the machine is
    quiet."""

    name: str
    model: dict
    task: object
    masks: np.ndarray
    net: object = None
    checks: dict = dataclasses.field(default_factory=dict)


def prepare(name: str, kind: str, kwargs: dict, num_masks: int, args, torch) -> Case:
    """Builds the case and checks every baseline's P(correct) against bablate's on its masks."""
    model = build(kind, seed=args.seed, **kwargs)
    case = Case(name, model, make_task(model, name), random_masks(num_masks,
                                                                  model["num_units"], args.seed))
    log(f"{name}: d={model['num_units']} N={model['examples']} M={num_masks}")
    if torch is None:
        return case
    import torch_baselines as tb

    case.net = tb.build(model)
    reference = np.asarray(case.task.p_correct(case.masks))
    few = case.masks[:args.loop_masks]
    block = int(args.masks_per_pass.split(",")[0])
    outs = {"hook": (tb.hook_loop(case.net, model["inputs"], model["targets"], few),
                     reference[:len(few)]),
            "repeat": (tb.batch_repeat(case.net, model["inputs"], model["targets"],
                                       case.masks, block), reference)}
    if case.net.cached:
        cache = tb.site_cache(case.net, model["inputs"])
        outs["cached"] = (tb.cached_repeat(case.net, cache, model["targets"], case.masks, block),
                          reference)
    for baseline, (got, want) in outs.items():
        diff = np.abs(got - want)
        case.checks[baseline] = {"max_abs_diff": float(diff.max()),
                                 "masks_differ": int((diff > args.check_tol).sum())}
        if case.checks[baseline]["masks_differ"]:
            raise SystemExit(
                f"{name}: PyTorch {baseline} and bablate give different P(correct) on "
                f"{case.checks[baseline]['masks_differ']} of {len(want)} masks (largest "
                f"|ΔP| {diff.max():.2e} > --check-tol {args.check_tol}): the baselines must "
                "score as bablate does before they are timed.")
    return case


def measure_peaks(torch, size: int) -> dict[str, float]:
    """Float32 matmul FLOP/s of JAX and (if loaded, at its current thread count) PyTorch."""
    peaks = {"jax": jax_matmul_peak(size)["flops_per_s"]}
    if torch is not None:
        peaks["torch"] = torch_matmul_peak(torch, size)["flops_per_s"]
    return peaks


def measure(case: Case, args, torch) -> dict:
    """Times bablate and every baseline once, between two peak readings, and gates the case."""
    model, task, masks = case.model, case.task, case.masks
    n, num_masks = model["examples"], len(masks)
    start = gating.sample()
    peaks_before = measure_peaks(torch, args.peak_size)
    jax_flops = model["flops_suffix"] if task.site.cached else model["flops_full"]
    res = {}

    t = time_fn(lambda: task.log_odds(masks, chunk_size=args.chunk_size), repeat=args.repeat,
                min_seconds=args.min_seconds)
    res["bablate"] = {**_entry(t, num_masks, n, jax_flops, "jax"), "cached": task.site.cached}

    # The same jitted evaluator, one mask per call, from a Python loop.
    single = jax.jit(lambda data, mask: task.log_odds_fn(data, mask[None]))
    loop_dev = [jax.numpy.asarray(m) for m in masks[:args.loop_masks]]
    t = time_fn(lambda: [single(task.data, m) for m in loop_dev], repeat=args.repeat,
                min_seconds=args.min_seconds)
    res["jax_loop"] = _entry(t, len(loop_dev), n, jax_flops, "jax")

    by_block = {}
    if torch is not None:
        torch_res, by_block = _time_torch(case, args, torch)
        res.update(torch_res)
    peaks_after = measure_peaks(torch, args.peak_size)
    gate = gating.judge(peaks_before, peaks_after, gating.idle_for_others(start, gating.sample()))
    # % of peak against the higher reading: a low one would flatter every entry.
    peaks = {k: max(peaks_before[k], peaks_after[k]) for k in peaks_before}
    for entry in res.values():
        entry["frac_of_matmul_peak"] = entry["flops_per_s"] / peaks[entry.pop("framework")]
    return {**by_block, "results": res, "gate": gate,
            "peaks": {"before": peaks_before, "after": peaks_after, "used": peaks,
                      "size": args.peak_size}}


def _time_torch(case: Case, args, torch) -> tuple[dict, dict]:
    """Every PyTorch baseline at every thread count: ``(entries, throughput by block size)``."""
    import torch_baselines as tb

    model, net, masks = case.model, case.net, case.masks
    x, y, n = model["inputs"], model["targets"], model["examples"]
    few = masks[:args.loop_masks]
    blocks = [int(b) for b in args.masks_per_pass.split(",")]
    cache = tb.site_cache(net, x) if net.cached else None
    cached_flops = model["flops_suffix"] if net.cached else model["flops_full"]
    all_threads = torch.get_num_threads()
    res, by_block_all = {}, {}
    for count in _thread_counts(args.torch_threads, all_threads):
        torch.set_num_threads(count)
        t = time_fn(lambda: tb.hook_loop(net, x, y, few), repeat=args.repeat,
                    min_seconds=args.min_seconds)
        res[f"torch_hook_{count}t"] = _entry(t, len(few), n, model["flops_full"], "torch")
        # Each batch-repeat form with its best block size (masks per forward pass), searched
        # as bablate's evaluator picks its block.
        runners = {"repeat": (lambda b: tb.batch_repeat(net, x, y, masks, b), model["flops_full"])}
        if net.cached:
            runners["cached"] = (lambda b: tb.cached_repeat(net, cache, y, masks, b), cached_flops)
        for baseline, (run, flops) in runners.items():
            by_block = {b: _entry(time_fn(lambda b=b, run=run: run(b), repeat=args.repeat,
                                          min_seconds=args.min_seconds),
                                  len(masks), n, flops, "torch") for b in blocks}
            best = max(by_block, key=lambda b: by_block[b]["mask_examples_per_s"])
            res[f"torch_{baseline}_{count}t"] = {**by_block[best], "masks_per_pass": best}
            by_block_all.setdefault(f"torch_{baseline}_by_block", {})[count] = {
                b: e["mask_examples_per_s"] for b, e in by_block.items()}
        if not net.cached:  # nothing to cache: the fair cached baseline is batch-repeat itself
            res[f"torch_cached_{count}t"] = {**res[f"torch_repeat_{count}t"],
                                             "same_as": f"torch_repeat_{count}t"}
    torch.set_num_threads(all_threads)
    return res, by_block_all


def ratios(res: dict) -> tuple[dict, dict]:
    """bablate's throughput over every other entry's, by wall and by CPU time; and, per PyTorch
    baseline, over its best thread count (by wall for the wall ratio, by CPU for the CPU one).
    Returns ``(ratio, best_threads)``."""
    base = res["bablate"]
    out, best_threads = {}, {}
    for k, v in res.items():
        if k != "bablate":
            out[f"bablate_vs_{k}"] = base["mask_examples_per_s"] / v["mask_examples_per_s"]
            out[f"bablate_vs_{k}_cpu"] = (base["mask_examples_per_cpu_s"]
                                          / v["mask_examples_per_cpu_s"])
    for baseline in BASELINES:
        entries = {k: v for k, v in res.items() if k.startswith(f"torch_{baseline}_")}
        if not entries:
            continue
        wall = max(entries, key=lambda k: entries[k]["mask_examples_per_s"])
        cpu = max(entries, key=lambda k: entries[k]["mask_examples_per_cpu_s"])
        out[f"bablate_vs_torch_{baseline}_best"] = out[f"bablate_vs_{wall}"]
        out[f"bablate_vs_torch_{baseline}_best_cpu"] = out[f"bablate_vs_{cpu}_cpu"]
        best_threads[baseline] = {"wall": wall, "cpu": cpu}
    return out, best_threads


def run_case(name: str, kind: str, kwargs: dict, num_masks: int, args, torch) -> dict:
    """Builds, checks and times one case, rerunning the timings while the gate says loaded."""
    case = prepare(name, kind, kwargs, num_masks, args, torch)
    for attempt in range(1, args.attempts + 1):
        timed = measure(case, args, torch)
        timed["gate"]["attempt"] = attempt
        if timed["gate"]["quiet"]:
            break
        log(f"{name}: loaded ({'; '.join(timed['gate']['reasons'])})")
        if attempt < args.attempts:
            log(f"{name}: rerun {attempt + 1} of {args.attempts} once the CPUs are idle "
                f"(waiting at most {args.retry_wait:g} s)")
            idle = gating.wait_for_quiet(args.retry_wait)
            log(f"{name}: CPUs {'?' if idle is None else f'{idle:.0%}'} idle for others")
    model = case.model
    rec = {"bench": "masked_eval", "case": name, "model": kind,
           "sizes": {**model["sizes"], "units": model["num_units"],
                     "examples": model["examples"], "masks": num_masks,
                     "chunk_size": args.chunk_size,
                     "torch_masks_per_pass": [int(b) for b in args.masks_per_pass.split(",")]},
           "command": _command(name), "check": case.checks, **timed}
    res = rec["results"]
    rec["throughput"] = res["bablate"]["mask_examples_per_s"]
    rec["ratio"], rec["best_threads"] = ratios(res)
    rec["flops_per_mask_example"] = {"full_network": model["flops_full"],
                                     "after_site": model["flops_suffix"]}
    if kind == "rnn":
        rec["tokens_per_s"] = rec["throughput"] * model["sizes"]["length"]
        rec["note"] = RNN_NOTE
    if not rec["gate"]["quiet"]:
        log(f"{name}: marked loaded after {args.attempts} attempt(s): not to be quoted")
    return rec


def _command(case: str) -> str:
    """This run's command line with ``--cases`` narrowed to one case (reruns that case)."""
    argv, out, skip = sys.argv[1:], [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--cases":
            skip = True
        elif not a.startswith("--cases="):
            out.append(a)
    return shlex.join(["python", "benchmarks/masked_eval.py", "--cases", case, *out])


def _thread_counts(spec: str | None, cores: int) -> list[int]:
    """PyTorch thread counts to time: ``"1,all"`` by default (``all`` = the cores JAX uses)."""
    spec = spec or "1,all"
    counts = [cores if c == "all" else int(c) for c in spec.split(",")]
    return sorted(set(counts), key=counts.index)


def _entry(t: dict, masks: int, examples: int, flops_per: float, framework: str) -> dict:
    rate = masks * examples / t["median_s"]
    return {"seconds": t["median_s"], "masks": masks, "masks_per_s": masks / t["median_s"],
            "mask_examples_per_s": rate, "flops_per_s": rate * flops_per,
            "cpu_seconds": t["cpu_median_s"],
            "mask_examples_per_cpu_s": masks * examples / max(t["cpu_median_s"], 1e-9),
            "first_call_s": t["first_call_s"], "repeats": t["repeats"], "framework": framework}


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--cases", default=None, help=f"comma list from {list(CASES)}")
    p.add_argument("--masks", type=int, default=None, help="override masks per case")
    p.add_argument("--chunk-size", type=int, default=1024, help="bablate masks per jitted call")
    p.add_argument("--loop-masks", type=int, default=32,
                   help="masks timed in the per-mask loops (jax loop, torch hooks)")
    p.add_argument("--masks-per-pass", default="4,8,16,32,64",
                   help="comma list of masks per forward pass for the torch batch-repeat "
                        "baselines; the best is reported (all in torch_*_by_block)")
    p.add_argument("--min-seconds", type=float, default=1.0,
                   help="keep repeating a timing until this much time is spent")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    p.add_argument("--torch-threads", default="1,all",
                   help="comma list of PyTorch intra-op thread counts to time; 'all' = the "
                        "cores JAX uses")
    p.add_argument("--check-tol", type=float, default=1e-6,
                   help="largest |ΔP(correct)| allowed between a baseline and bablate on a mask "
                        "(default: equal counts; one flipped decision moves P by 1/(N+2))")
    p.add_argument("--peak-size", type=int, default=2048,
                   help="square float32 matmul whose rate is the peak (smaller ones run from "
                        "cache and read high)")
    p.add_argument("--attempts", type=int, default=3,
                   help="times a case is measured until the gate finds the machine quiet")
    p.add_argument("--retry-wait", type=float, default=60.0,
                   help="before measuring a loaded case again, wait until a 5 s window finds "
                        "the CPUs >= 80%% idle for other processes, at most this many seconds")
    args = parse_args(p)
    if args.attempts < 1:
        p.error(f"--attempts must be at least 1, got {args.attempts}")
    cases = QUICK if args.quick else CASES
    if args.quick:
        args.repeat, args.min_seconds, args.loop_masks = 1, 0.0, 8
        args.peak_size, args.attempts = 512, 1
    if args.cases:
        names = args.cases.split(",")
        unknown = [c for c in names if c not in CASES]
        if unknown:
            p.error(f"unknown cases {unknown}; choose from {list(CASES)}")
        cases = {c: CASES[c] for c in names}
    torch = torch_or_none(args.no_torch)
    start = time.perf_counter()
    for name, (kind, kwargs, num_masks) in cases.items():
        emit(run_case(name, kind, kwargs, args.masks or num_masks, args, torch))
    log(f"done in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
