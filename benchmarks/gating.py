"""Quiet-machine gating of a benchmark case: how idle the CPUs were for everything else while
it ran (from ``/proc/stat``), and whether the measured matmul peak held from before the case to
after it. A case that fails either test is rerun or marked, never quoted (benchmarks/README.md).

Why both: on a shared machine another job takes cores without warning, and multi-threaded
baselines collapse under it (PyTorch's spinning workers) far more than single-threaded ones, so
ratios measured then say more about the load than about the code. The matmul peak read before
and after the case catches a machine whose speed changed in between (load, frequency); the
idle share catches load that came and went inside the case.
"""

from __future__ import annotations

import dataclasses
import os
import time

# A case is quoted only if the CPUs were this idle for other processes over the case ...
MIN_IDLE = 0.8
# ... and its matmul peaks before and after differ by at most this fraction (of the larger).
MAX_PEAK_CHANGE = 0.2


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU time at one instant: the whole machine (all CPUs, from ``/proc/stat``, in
    seconds) and this process (all its threads)."""

    total_s: float
    busy_s: float
    own_s: float


def read_proc_stat(text: str, ticks_per_s: float) -> tuple[float, float]:
    """``(total, busy)`` CPU seconds of the machine from the text of ``/proc/stat``.

    Busy = user, nice, system, irq, softirq and steal (time the hypervisor gave to others);
    idle and iowait are idle. Guest time is already inside user.
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (
                [float(v) for v in fields[1:9]] + [0.0] * 8)[:8]
            busy = user + nice + system + irq + softirq + steal
            return (busy + idle + iowait) / ticks_per_s, busy / ticks_per_s
    raise ValueError("/proc/stat has no aggregate 'cpu' line.")


def sample() -> CpuSample | None:
    """The machine's and this process's CPU time now, or None where ``/proc/stat`` is missing."""
    try:
        with open("/proc/stat") as f:
            text = f.read()
    except OSError:
        return None
    total, busy = read_proc_stat(text, os.sysconf("SC_CLK_TCK"))
    t = os.times()
    return CpuSample(total_s=total, busy_s=busy, own_s=t.user + t.system)


def idle_for_others(start: CpuSample | None, end: CpuSample | None) -> float | None:
    """Fraction of the machine's CPU time between two samples that other processes left idle:
    1 - (busy - this process's own) / total. None if either sample is missing."""
    if start is None or end is None:
        return None
    total = end.total_s - start.total_s
    if total <= 0:
        return None
    others = (end.busy_s - start.busy_s) - (end.own_s - start.own_s)
    return min(1.0, max(0.0, 1.0 - others / total))


def judge(peaks_before: dict[str, float], peaks_after: dict[str, float], idle: float | None,
          min_idle: float = MIN_IDLE, max_peak_change: float = MAX_PEAK_CHANGE) -> dict:
    """The gate of one case: quiet only if every framework's matmul peak moved by at most
    ``max_peak_change`` of the larger reading and the CPUs were at least ``min_idle`` idle for
    other processes. Returns ``{"quiet", "reasons", "cpu_idle", "peak_change"}``."""
    reasons = []
    change = {}
    for name in sorted(peaks_before):
        a, b = peaks_before[name], peaks_after[name]
        change[name] = abs(a - b) / max(a, b)
        if change[name] > max_peak_change:
            reasons.append(f"{name} matmul peak moved {change[name]:.0%} over the case "
                           f"({a / 1e9:.0f} -> {b / 1e9:.0f} GFLOP/s)")
    if idle is None:
        reasons.append("CPU idleness unknown (no /proc/stat)")
    elif idle < min_idle:
        reasons.append(f"CPUs only {idle:.0%} idle for other processes (< {min_idle:.0%})")
    return {"quiet": not reasons, "reasons": reasons, "cpu_idle": idle, "peak_change": change}



def wait_for_quiet(max_s: float, window_s: float = 5.0, min_idle: float = MIN_IDLE) -> float | None:
    """Waits (at most ``max_s`` seconds) for a ``window_s`` window in which other processes left
    the CPUs at least ``min_idle`` idle; returns that window's idle share (the last one read if
    none was quiet), or None without ``/proc/stat``. Call it while this process is idle."""
    deadline = time.monotonic() + max_s
    idle = None
    while True:
        start = sample()
        time.sleep(window_s)
        idle = idle_for_others(start, sample())
        if idle is None or idle >= min_idle or time.monotonic() + window_s > deadline:
            return idle
