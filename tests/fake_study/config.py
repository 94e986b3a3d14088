"""Config of the test-only fake study (see tests/fake_study/__init__.py).

    python launch.py --config=tests/fake_study/config.py:quick --workdir=/tmp/fake
"""

import ml_collections

from bablate.runner import config_checks

VARIANTS = ("quick", "slow")


def get_config(arg=None):
    variant = config_checks.variant(arg, VARIANTS)
    config = ml_collections.ConfigDict()
    config.study = "tests.fake_study"
    config.variant = variant
    config.seed = 0
    config.steps = 4
    config.scale = 1.0
    config.sleep = 0.5 if variant == "slow" else 0.0
    config.model = ml_collections.ConfigDict({"width": 3, "name": "tiny"})
    return config


def get_sweep(arg=None):
    if (arg or "quick") == "quick":
        return [{"seed": 0}, {"seed": 1, "scale": 2.0}]
    return [{"seed": seed, "scale": scale} for seed in (0, 1) for scale in (0.5, 2.0)]
