"""Config of the test-only fake study (see tests/fake_study/__init__.py).

    python launch.py --config=tests/fake_study/config.py:quick --workdir=/tmp/fake
"""

from bablate.runner import config_checks
from tests.fake_study import FakeConfig

VARIANTS = ("quick", "slow")


def get_config(arg=None):
    variant = config_checks.variant(arg, VARIANTS)
    config = config_checks.config_dict(FakeConfig, study="tests.fake_study", variant=variant)
    if variant == "slow":
        config.sleep = 0.5
    return config


def get_sweep(arg=None):
    if (arg or "quick") == "quick":
        return [{"seed": 0}, {"seed": 1, "scale": 2.0}]
    return [{"seed": seed, "scale": scale} for seed in (0, 1) for scale in (0.5, 2.0)]
