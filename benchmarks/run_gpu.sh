#!/usr/bin/env bash
# One GPU run of the benchmarks, within ~9 minutes on one H100/H200: masked evaluation of the
# cases of the CPU table (benchmarks/README.md) plus the LLaMA block, exact enumeration (2^20
# masks), the sampler, and the LLM head-site AMD by SVI and by certified importance sampling
# (270 heads of a SmolLM2-135M-shaped model with random weights: needs no gguf package and no
# weights file). Every script writes JSON lines;
# each step has its own time limit, so a slow step costs only its own lines, and the run goes on.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]          # full sizes (GPU)
#   bash benchmarks/run_gpu.sh OUT_DIR --tiny     # every step with --quick (a CPU smoke test)
#   PYTHON=.venv/bin/python bash benchmarks/run_gpu.sh OUT_DIR   # another interpreter
#
# Runs every script with $PYTHON (default python3), which needs jax (with CUDA on the GPU),
# numpyro, flax, optax, chex; torch is not used (--no-torch: its baselines are CPU-only twins,
# so a GPU-vs-CPU ratio would mean nothing).
set -u
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-gpu_results}}"
TINY="${2:-}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" BABLATE_PROGRESS=0
QUICK=()
CASES=(--cases toy_large,mlp512,rnn12,rnn128,llama_mlp --masks 4096)
SCALE=1  # the smoke test runs on a CPU, often a shared one: longer limits there
if [ "$TINY" = "--tiny" ]; then QUICK=(--quick); CASES=(); SCALE=5; fi

step() {  # step NAME SECONDS SCRIPT ARGS...
  local name=$1 limit=$2; shift 2
  echo "[$(date +%T)] $name (limit ${limit}s)" >&2
  local t0=$SECONDS
  timeout $((limit * SCALE)) "$PYTHON" "benchmarks/$@" "${QUICK[@]}" >"$OUT/$name.jsonl" 2>"$OUT/$name.log"
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$OUT/steps.jsonl"
  [ $rc -eq 0 ] || echo "[$(date +%T)] $name exited $rc (see $OUT/$name.log)" >&2
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$PYTHON" -c "import jax; print(jax.__version__, jax.devices())"; } >"$OUT/machine.txt" 2>&1

# Masks/s and % of the f32 matmul peak, read before and after each case (masked_eval's JSON
# has both, and the gate); one attempt per case here: a loaded case is marked, not rerun.
step masked_eval 180 masked_eval.py --no-torch --attempts 1 "${CASES[@]}"
# 2^20 masks, toy (cached) and RNN (in place), default example counts.
step exact_enumeration 60 exact_enumeration.py --units 20
# ESS/s of the gradient sampler at d = 256 and 1536 (stock numpyro only at d = 256: its
# sequential sweep of 1536 evaluations is slow anywhere).
step sampler 120 sampler_efficiency.py --units 256,1536 --samplers gradient --chains 4,16 --no-svi
step sampler_stock 40 sampler_efficiency.py --units 256 --samplers stock --chains 4 --no-svi --no-e2e
# SVI over SmolLM2's 270 heads: the wall time of one AMD.
step llm_head_site 150 llm_head_site.py --prompts 16 --length 16 --svi-steps 500 --particles 32
# The certified AMD of the same 270 heads: adaptive importance sampling to a standard error of
# 0.05 per head (its verdict, forward passes, ESS and log Z ± s.e. in the JSON line).
step certified_heads 240 llm_head_site.py --prompts 16 --length 16 --svi-steps 0 \
  --readout-masks 0 --certified-se 0.05 --certified-masks 8192

echo "[$(date +%T)] done: $OUT/*.jsonl" >&2
