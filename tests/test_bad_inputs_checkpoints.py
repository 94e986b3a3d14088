"""Checkpoints stamped with the run's own config but holding the wrong thing: nothing, arrays of
the wrong shape, NaN or zeros. Each is refused in one line that names the file, what is wrong
and the fix (exit 2 through launch.py), and every study still resumes from its own checkpoints.

A checkpoint rewritten consistently (weights × 0.9 under its own stamp) is not detectable by
a checksum and is a documented trust boundary (README, "Troubleshooting").
"""

import json

import jax
import numpy as np
import pytest

from bablate import dictionary as dl
from bablate import errors, statefile
from bablate.models import rnn
from bablate.runner import context
from bablate.studies.basis_comparison import bases
from bablate.studies.basis_comparison import config as basis_config
from bablate.studies.basis_comparison import llm as basis_llm
from bablate.studies.basis_comparison import rnn as basis_rnn
from bablate.studies.basis_comparison import toy as basis_toy
from bablate.studies.basis_comparison import variants as basis_variants
from bablate.studies.basis_comparison.keys import ToyKeys
from bablate.studies.rnn_chunks import training as rnn_training
from bablate.studies.toy_superposition import config as toy_config
from bablate.studies.toy_superposition import control, train
from bablate.studies.toy_superposition import variants as toy_variants
from bablate.testbeds import rnn as rnn_testbed
from tests.test_bad_inputs_cli import FAKE, _crash_at_step, assert_nothing_finished, assert_one_line

REFUSAL = "does not hold what this run saves ("
FIX = "; rerun with --overwrite to start this run afresh"


# ----------------------------------------------------------------------------- the comparison


@pytest.mark.parametrize("tree,like,problem", [
    ({}, {"params": np.ones(2)}, "the top level has keys [], expected ['params']"),
    ({"params": np.ones(3)}, {"params": np.ones(2)}, "params has shape (3,), expected (2,)"),
    ({"p": {"W": np.ones((2, 1))}}, {"p": {"W": np.ones((2, 3))}},
     "p['W'] has shape (2, 1), expected (2, 3)"),
    ({"w": np.array([1.0, np.nan])}, {"w": jax.ShapeDtypeStruct((2,), np.float32)},
     "w holds 1 NaN/inf values"),
    ({"w": np.zeros(2)}, {"w": np.ones(2)}, "w is all zeros"),
    ({"w": np.ones(2, np.int32)}, {"w": np.ones(2, np.float32)},
     "w has dtype int32, expected float32"),
    ({"w": [1.0, 2.0]}, {"w": np.ones(2)}, "w is a list, not an array"),
    ({"h": [1]}, {"h": dict}, "h is a list, not a dict"),
    ({"layers": [np.ones(2)]}, {"layers": [np.ones(2), np.ones(2)]},
     "layers is a list of 1, expected a list of 2"),
    ([1, 2], {"a": 1}, "the top level is a list, not a dict"),
    ({"layer": 3}, {"layer": 4}, "layer is 3, expected 4"),
], ids=["empty", "shape", "nested-shape", "nan", "zeroed", "dtype", "list-for-array",
        "list-for-dict", "length", "top-level", "value"])
def test_mismatch_names_the_first_difference(tree, like, problem):
    assert statefile.mismatch(tree, like) == problem


def test_mismatch_accepts_what_matches():
    like = {"params": {"W": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)},
            "loss": jax.ShapeDtypeStruct((2,), np.float32), "history": dict, "step": int,
            "pair": (1, "a")}
    tree = {"params": {"W": np.full((2, 3), 0.5, np.float64), "b": np.zeros(3, np.float32)},
            "loss": np.array([0.1, 0.2], np.float32), "history": {"loss": [float("nan")]},
            "step": 7, "pair": (1, "a")}
    assert statefile.mismatch(tree, like) is None  # zero b: like's b is zero too


# ----------------------------------------------------------------------------- through launch.py




@pytest.mark.parametrize("damage,tree,problem", [
    ("empty", {}, "the top level has keys [], expected ['acc', 'step']"),
    ("wrong-shape", {"step": 2, "acc": np.ones(5)}, "acc has shape (5,), expected (3,)"),
    ("nan", {"step": 2, "acc": np.full(3, np.nan)}, "acc holds 3 NaN/inf values"),
    ("wrong-type", {"step": "2", "acc": np.ones(3)}, "step is a str, not a int"),
])
def test_checkpoint_with_the_runs_stamp_and_wrong_contents_is_one_line(damage, tree, problem,
                                                                       cli, monkeypatch,
                                                                       tmp_path):
    workdir = tmp_path / "run"
    _crash_at_step(monkeypatch, cli, workdir, 2)
    path = workdir / "state" / "progress.msgpack"
    _, stamp = statefile.loads(path.read_bytes())
    path.write_bytes(statefile.dumps(tree, stamp))
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}")
    assert code == 2
    assert_one_line(err, f"checkpoint {str(path)!r} {REFUSAL}{problem}){FIX}", whole=False)
    assert_nothing_finished(workdir)
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}", "--overwrite")
    assert code == 0, err


def test_directory_where_the_checkpoint_should_be_is_one_line(cli, monkeypatch, tmp_path):
    workdir = tmp_path / "run"
    _crash_at_step(monkeypatch, cli, workdir, 2)
    path = workdir / "state" / "progress.msgpack"
    path.unlink()
    path.mkdir()
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}")
    assert code == 2
    assert_one_line(err, f"checkpoint {str(path)!r} is corrupt (it is not a file){FIX}",
                    whole=False)
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}", "--overwrite")
    assert code == 0, err
    assert json.loads((workdir / "results.json").read_text())["steps"] == 4


# ----------------------------------------------------------------------------- the studies


def _toy_cfg(**control):
    config = toy_variants.get_config("quick")
    config.train.steps = config.train.chunk_steps = 2
    config.num_replicates = 1
    config.density_grid.num = 2
    config.control.num_seeds = control.get("num_seeds", 0)
    return toy_config.from_config(config)


def _toy_train(ctx):
    cfg = _toy_cfg()
    return train.train(cfg, ctx, train.layout(cfg), jax.random.key(0))


def _toy_control(ctx):
    return control.initialisation_control(_toy_cfg(num_seeds=1), ctx, jax.random.key(0))


def _rnn_chunks_train(ctx):
    seq = rnn_testbed.make_sequence("reflection", 0)
    model = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=4)
    tc = rnn.TrainConfig(steps=10, window=20, batch=2, chunk=10, eval_every=10)
    test = rnn_testbed.to_windows(seq, 20, 100)
    return rnn_training.train_or_load(model, tc, "net_seed0", seq.tokens, test,
                                      jax.random.key(0), ctx)


def _basis_cfg():
    config = basis_variants.get_config("quick")
    config.toy.train_steps = 2
    config.toy.densities = [0.3]
    config.rnn.train_steps = 50
    config.rnn.hidden = 4
    return basis_config.from_config(config)


def _basis_toy_train(ctx):
    tc = _basis_cfg().toy
    keys = ToyKeys.from_key(jax.random.key(0), len(tc.densities))
    return basis_toy.train_models(tc, ctx, keys)[0]  # without "reloaded?"


def _basis_rnn_train(ctx):
    rc = _basis_cfg().rnn
    seq = rnn_testbed.make_sequence(rc.family, 0)
    model = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=rc.hidden, cell=rc.cell)
    return basis_rnn.train_network(rc, model, seq.tokens, ctx, jax.random.key(0))[0]


# (loader, checkpoint name, what training calls, damages it refuses)
LOADERS = {
    "toy_superposition-params": (_toy_train, "params", "bablate.models.toy.train_instances",
                                 ("empty", "wrong-shape", "nan", "zeroed")),
    "toy_superposition-control": (_toy_control, "control",
                                  "bablate.models.toy.train_instances",
                                  ("empty", "wrong-shape", "nan")),
    "rnn_chunks-network": (_rnn_chunks_train, "net_seed0", "bablate.models.rnn.train",
                           ("empty", "wrong-shape", "nan", "zeroed")),
    "basis_comparison-toy": (_basis_toy_train, "toy_params", "bablate.models.toy.train_instances",
                             ("empty", "wrong-shape", "nan", "zeroed")),
    "basis_comparison-rnn": (_basis_rnn_train, "rnn_params", "bablate.models.rnn.train",
                             ("empty", "wrong-shape", "nan", "zeroed")),
}
PROBLEMS = {"empty": "the top level has keys []", "wrong-shape": "has shape",
            "nan": "NaN/inf values", "zeroed": "is all zeros"}


def _damaged(tree, damage: str):
    """``tree`` with every float array emptied of its last column, NaN or zero."""
    if damage == "empty":
        return {}

    def hurt(x):
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            return x
        if damage == "wrong-shape":
            return x[..., :1] if x.ndim and x.shape[-1] > 1 else np.ones((2, 2), x.dtype)
        return np.full_like(x, np.nan if damage == "nan" else 0.0)

    return jax.tree.map(hurt, tree)


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("study", list(LOADERS))
def test_study_resumes_from_its_checkpoint_and_refuses_damaged_ones(study, tmp_path,
                                                                    monkeypatch):
    load, name, trainer, damages = LOADERS[study]
    ctx = context.RunContext(workdir=tmp_path, config_hash="c" * 64)
    fresh = load(ctx)
    saved, stamp = statefile.loads(ctx.state_path(name).read_bytes())
    assert stamp == ctx.config_hash

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of resuming from the checkpoint")

    monkeypatch.setattr(trainer, no_training)
    assert _same(load(ctx), fresh)  # its own checkpoint passes the check
    for damage in damages:
        ctx.state_path(name).write_bytes(statefile.dumps(_damaged(saved, damage), stamp))
        with pytest.raises(errors.RunError) as info:
            load(ctx)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(f"checkpoint {str(ctx.state_path(name))!r} "
                                                  f"{REFUSAL}"), msg
        assert PROBLEMS[damage] in msg and msg.endswith(FIX), msg


def test_llm_dictionary_setup_is_reused_only_when_it_is_the_same(tmp_path):
    ctx = context.RunContext(workdir=tmp_path, config_hash="c" * 64)
    setup = {"layer": 3, "fit_concepts": ["cheese"], "dictionaries": [{"method": "sae_topk"}]}
    assert not basis_llm.same_setup(ctx, setup)  # nothing saved
    ctx.save_state("llm_setup", setup)
    assert basis_llm.same_setup(ctx, setup)
    for other in ({}, {**setup, "layer": 4}, {**setup, "layer": np.ones((2, 2))}):
        ctx.save_state("llm_setup", other)
        assert not basis_llm.same_setup(ctx, setup)  # refitted, never a traceback


@pytest.mark.slow
def test_saved_dictionary_is_reused_and_a_damaged_one_is_one_line(tmp_path, monkeypatch):
    """basis_comparison keeps each fitted dictionary in the run's dictionaries/ and reuses it
    when the network was reloaded; a damaged file there is refused like a checkpoint."""
    ctx = context.RunContext(workdir=tmp_path)
    acts = np.abs(np.asarray(jax.random.normal(jax.random.key(0), (64, 6))))
    configs = (dl.DictionaryConfig("sae_topk", 4, steps=100, top_k=2),)
    fitted, _ = bases.fit_dictionaries(acts, configs, jax.random.key(1), ctx, "toy", False)
    path = tmp_path / "dictionaries" / "toy_sae_topk_4.npz"
    good = path.read_bytes()

    def no_fitting(*args, **kwargs):
        raise AssertionError("fitted again instead of reusing the saved dictionary")

    monkeypatch.setattr(dl, "fit", no_fitting)
    again, _ = bases.fit_dictionaries(acts, configs, jax.random.key(1), ctx, "toy", True)
    np.testing.assert_array_equal(again["sae_topk"].decoder, fitted["sae_topk"].decoder)
    with np.load(path) as f:
        arrays = dict(f)
    nan = {**arrays, "decoder": np.full_like(arrays["decoder"], np.nan)}
    for damage, problem in ((good[: len(good) // 2], "(BadZipFile: "), (b"", "(EOFError: "),
                            (nan, "(ValueError: decoder holds NaN/inf)")):
        if isinstance(damage, dict):
            np.savez(path, **damage)
        else:
            path.write_bytes(damage)
        with pytest.raises(errors.RunError) as info:
            bases.fit_dictionaries(acts, configs, jax.random.key(1), ctx, "toy", True)
        msg = str(info.value)
        assert "\n" not in msg, msg
        assert msg.startswith(f"{path} is not a dictionary file written by "
                              f"bablate.dictionary.save {problem}"), msg
        assert msg.endswith(FIX), msg
