"""Runs a bablate study, or a sweep of them, into a run directory (the same as ``python -m
bablate``; see bablate/runner/cli.py).

    python launch.py                                   # the quick toy-superposition study
    python launch.py --config=rnn_chunks:quick --config.seed=3
    python launch.py --config=experiments/toy_superposition.py:quick --sweep --jobs 2

Each run writes config.json, log.txt, figures/, report.md and results.json into --workdir
(default runs/<study>/<variant>, or runs/<study>/<variant>-sweep for a sweep); see README.md,
"Sweeps and run directories".
"""

from bablate.runner.cli import entry, main, setup_cpu_devices  # noqa: F401

if __name__ == "__main__":
    entry()
