"""Basis comparison (neurons vs learned dictionaries vs a rotation): the study's config file.

The variants, what each reproduces, their runtimes and expected numbers are in
bablate/studies/basis_comparison/variants.py, which ships with the package; this file lets the
commands name it by path. Both of these run the quick variant:

    python -m bablate --config=basis_comparison:quick
    python launch.py --config=experiments/basis_comparison.py:quick
"""

from bablate.studies.basis_comparison.variants import VARIANTS, get_config, get_sweep

__all__ = ["VARIANTS", "get_config", "get_sweep"]
