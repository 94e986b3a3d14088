"""LLM concepts on SmolLM2-135M (Wu et al. 2025, LLM part): the study's config file.

The variants, what each reproduces, their runtimes and expected numbers are in
bablate/studies/llm_concepts/variants.py, which ships with the package; this file lets the commands
name it by path. Both of these run the quick variant:

    python -m bablate --config=llm_concepts:quick
    python launch.py --config=experiments/llm_concepts.py:quick
"""

from bablate.studies.llm_concepts.variants import VARIANTS, get_config, get_sweep

__all__ = ["VARIANTS", "get_config", "get_sweep"]
