"""``python -m bablate [--config=<study>[:variant] | path.py[:variant]] ...`` (bablate/cli.py)."""

from bablate.cli import entry

entry()
