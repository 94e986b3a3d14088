"""Toy superposition (Elhage et al. 2022): the study's config file.

The variants, the paper figures each reproduces, their runtimes and expected numbers are in
bablate/studies/toy_superposition/variants.py, which ships with the package; this file lets the
commands name it by path. Both of these run the quick variant:

    python -m bablate --config=toy_superposition:quick
    python launch.py --config=experiments/toy_superposition.py:quick
"""

from bablate.studies.toy_superposition.variants import VARIANTS, get_config, get_sweep

__all__ = ["VARIANTS", "get_config", "get_sweep"]
