"""A tiny study used to test the runner (launch.py, bablate.runner.runs, bablate.runner.sweeps).

It accumulates ``steps`` seeded random vectors, checkpointing after every step, so tests can
check resume-from-state, determinism, figures, text and result conversion without training
anything. ``FAKE_STUDY_FAIL_AT_STEP=k`` makes the run raise when it reaches step k (a crash
that leaves a checkpoint behind); ``config.sleep`` slows each step (for kill tests).
``FAKE_STUDY_PAUSE_FILE=path`` holds the run after step k of seed s while that file exists and
reads "s k" (or is empty: after every step).
``FAKE_STUDY_WARN=1`` makes the run issue a warning through the library (the intact-network
check of `bablate.tasks`) and one of its own, as a real study's sampler or data checks would.
``validate(config)`` refuses bad values before any work, like a real study's.
"""

import dataclasses
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

from bablate import progress, tasks
from bablate.runner import config_checks as cc


@dataclasses.dataclass(frozen=True)
class Model:
    width: int = cc.field(3, cc.integer(1))
    name: str = cc.field("tiny", cc.text())


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    """Every field of the fake study's config, declared once (config.py makes the ConfigDict)."""

    variant: str = cc.field("quick")
    seed: int = cc.field(0, cc.integer(0))
    steps: int = cc.field(4, cc.integer(1))
    scale: float = cc.field(1.0, cc.number())
    sleep: float = cc.field(0.0, cc.number(0))  # seconds per step (kill tests)
    model: Model = cc.field(Model())


def validate(config):
    """Checks the config before any work, as every study does."""
    cc.check(config, cc.rules(FakeConfig))


def _paused(seed: int, step: int) -> bool:
    """Whether FAKE_STUDY_PAUSE_FILE exists and names this point ("<seed> <step>"; empty: any)."""
    try:
        with open(os.environ.get("FAKE_STUDY_PAUSE_FILE", ""), encoding="ascii") as f:
            where = f.read().split()
    except OSError:
        return False
    return not where or where == [str(seed), str(step)]


def run(config, ctx):
    fail_at = int(os.environ.get("FAKE_STUDY_FAIL_AT_STEP", "-1"))
    state = ctx.load_state("progress", like={"step": int, "acc": np.zeros(3)})
    if state is None:
        step, acc = 0, np.zeros(3)
    else:
        step, acc = int(state["step"]), state["acc"]
        ctx.log(f"resumed at step {step}")
    for s in progress.track(range(step, config.steps), desc="fake steps", unit="step"):
        if s == fail_at:
            raise RuntimeError(f"planned failure at step {s}")
        # One generator per (seed, step): a resumed run draws exactly what a fresh one would.
        acc = acc + config.scale * np.random.default_rng([config.seed, s]).normal(size=3)
        time.sleep(config.sleep)
        ctx.save_state("progress", {"step": s + 1, "acc": acc})
        ctx.log(f"step {s + 1}/{config.steps}")
        while _paused(config.seed, s + 1):
            time.sleep(0.05)  # held here (after a checkpoint) for lock / kill / Ctrl-C tests
    if os.environ.get("FAKE_STUDY_WARN") == "1":
        tasks.warn_if_intact_fails("fake", -1.0)  # a library warning, attributed to this line
        warnings.warn("the fake study's own warning", RuntimeWarning, stacklevel=1)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(range(3), acc)
    ctx.text("## Accumulated sums\n\nThree sums of seeded normal draws.")
    ctx.figure(fig, "sums", "The three accumulated sums.")
    ctx.text("Closing remarks.")
    # "config": a copy of the config among the results, as the toy study returns one
    return {"sums": acc, "total": np.float64(acc.sum()), "steps": config.steps,
            "undefined": float("nan"), "config": config.to_dict()}
