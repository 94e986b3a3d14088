"""``python -m bablate [--config=<study>[:variant] | path.py[:variant]] ...`` (bablate/cli.py)."""

from bablate.cli import entry

if __name__ == "__main__":  # importing bablate.__main__ (e.g. to list modules) runs nothing
    entry()
