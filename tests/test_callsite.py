"""Warnings name the line of the code that called bablate, not a line inside it."""

import warnings

import pytest

from bablate import callsite, tasks


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        return 1 + next(i for i, s in enumerate(f) if marker in s and "_line_of" not in s)


def test_a_library_warning_names_the_callers_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks.warn_if_intact_fails("t", -1.0)  # the caller's line
    (w,) = caught
    assert w.filename == __file__ and w.lineno == _line_of("# the caller's line")
    assert issubclass(w.category, UserWarning) and "already fails it" in str(w.message)


def test_the_category_and_a_warning_instance_are_kept():
    class Mine(UserWarning):
        pass

    with pytest.warns(Mine, match="as an instance") as caught:
        callsite.warn_caller(Mine("as an instance"))
    assert caught[0].filename == __file__
    with pytest.warns(RuntimeWarning, match="as text"):
        callsite.warn_caller("as text", RuntimeWarning)


def test_studies_are_callers_and_jax_frames_are_passed_through():
    assert not callsite._is_library("bablate.studies.toy_superposition.ablation")
    assert not callsite._is_library("tests.test_callsite") and not callsite._is_library(
        "__main__")
    for name in ("bablate", "bablate.tasks", "bablate.inference.mcmc", "jax._src.api",
                 "numpyro.infer.mcmc", "flax.linen.module", "contextlib"):
        assert callsite._is_library(name), name
