"""``python -m bablate [--config=<study>[:variant] | path.py[:variant]] ...`` (runner/cli.py)."""

from bablate.runner.cli import entry

if __name__ == "__main__":  # importing bablate.__main__ (e.g. to list modules) runs nothing
    entry()
