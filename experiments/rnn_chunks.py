"""RNN chunks (Wu et al. 2025, RNN part): the study's config file.

The variants, what each reproduces, their runtimes and expected numbers are in
bablate/studies/rnn_chunks/variants.py, which ships with the package; this file lets the commands
name it by path. Both of these run the quick variant:

    python -m bablate --config=rnn_chunks:quick
    python launch.py --config=experiments/rnn_chunks.py:quick
"""

from bablate.studies.rnn_chunks.variants import VARIANTS, get_config, get_sweep

__all__ = ["VARIANTS", "get_config", "get_sweep"]
