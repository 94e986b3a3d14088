"""Inference options as typed values: the same numbers as the keyword form, one-line errors."""

from __future__ import annotations

import dataclasses
import inspect

import jax
import numpy as np
import pytest

import bablate as bb
from bablate.inference.options import OPTIONS


@pytest.fixture
def task_set(head_task_set):
    return head_task_set


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_the_defaults_are_the_methods_own(method):
    fn = {"exact": bb.exact, "importance": bb.importance, "mcmc": bb.mcmc, "svi": bb.svi}[method]
    params = inspect.signature(fn).parameters
    for field in dataclasses.fields(OPTIONS[method]):
        if field.default is not None:  # None leaves the method's own default
            assert params[field.name].default == field.default, (method, field.name)
    assert set(OPTIONS[method].names()) == set(params) - {"task", "key", "prior", "beta"}


def test_an_options_object_gives_the_numbers_of_the_keyword_form(task_set):
    key = jax.random.key(1)
    mc = dict(num_samples=40, num_warmup=10, num_chains=2, sampler="informed")
    with pytest.warns(bb.inference.ConvergenceWarning):  # a short run
        by_keywords = bb.infer(task_set[0], "mcmc", key, **mc)
        by_options = bb.infer(task_set[0], "mcmc", key, options=bb.McmcOptions(**mc))
    np.testing.assert_array_equal(by_options.samples, by_keywords.samples)
    np.testing.assert_array_equal(by_options.log_density, by_keywords.log_density)
    # Under "auto", one object per method; keywords replace their fields.
    sv = dict(num_steps=20, steps_per_call=10, num_draws=10)
    with pytest.warns(bb.inference.ConvergenceWarning):
        many_keywords = bb.infer_many(task_set, "auto", key, max_exact=4, large="svi",
                                      chunk_size=64, **sv)
        many_options = bb.infer_many(task_set, "auto", key, max_exact=4, large="svi",
                                     options=(bb.ExactOptions(chunk_size=64),
                                              bb.SviOptions(num_steps=99)), **sv)
    for a, b in zip(many_keywords, many_options, strict=True):
        np.testing.assert_array_equal(a.marginals, b.marginals)
        np.testing.assert_array_equal(a.samples, b.samples)
    small = bb.infer_many(task_set, "auto", options=bb.ExactOptions(chunk_size=64))
    np.testing.assert_array_equal(small[1].log_probs,
                                  bb.infer_many(task_set, "auto", chunk_size=64)[1].log_probs)


@pytest.mark.parametrize("call,match", [
    (lambda t: bb.infer(t[0], "exact", num_sample=3),
     r"^unknown inference option\(s\) \['num_sample'\] for method 'exact'; its options are "
     r"smooth, chunk_size, max_units\.$"),
    (lambda t: bb.infer_many(t, "auto", num_sample=3),
     r"^unknown inference option\(s\) \['num_sample'\]; the methods' options are exact: .*; "
     r"mcmc: sampler, num_samples, .*\.$"),
    (lambda t: bb.infer(t[0], "exact", options=bb.McmcOptions()),
     r"^options for method \['mcmc'\] passed to method 'exact'; pass ExactOptions\.$"),
    (lambda t: bb.infer(t[0], "exact", options={"chunk_size": 64}),
     r"^options= takes an ExactOptions, .* got dict\.$"),
])
def test_an_unknown_option_fails_in_one_line_naming_the_options(task_set, call, match):
    with pytest.raises(ValueError, match=match) as err:
        call(task_set)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make,match", [
    (lambda: bb.McmcOptions(num_samples="100"),
     r"^McmcOptions\.num_samples must be an int, got '100' \(str\)\.$"),
    (lambda: bb.McmcOptions(num_samples=True), r"must be an int, got True \(bool\)"),
    (lambda: bb.SviOptions(learning_rate=None), r"must be a number, got None"),
    (lambda: bb.McmcOptions(sampler="gibbs"),
     r"^unknown sampler 'gibbs' in McmcOptions; choose one of \('auto', 'informed', "
     r"'gradient', 'stock'\)\.$"),
    (lambda: bb.SviOptions(estimator="reparam"), r"^unknown estimator 'reparam' in SviOpt"),
    (lambda: bb.ExactOptions(chunk_size=64.0), r"ExactOptions\.chunk_size must be an int"),
])
def test_a_bad_option_value_fails_in_one_line(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def test_a_bad_keyword_value_fails_before_any_work(task_set):
    with pytest.raises(ValueError, match=r"^unknown flips 'many' in McmcOptions") as err:
        bb.infer_many(task_set, "mcmc", jax.random.key(0), flips="many")
    assert "\n" not in str(err.value)
    assert bb.McmcOptions(num_samples=np.int64(5)).num_samples == 5  # numpy ints are ints
