"""Masks sharded over several (fake CPU) devices give the same numbers as one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    if {cpu_devices}:
        from bablate import sharding
        sharding.use_cpu_devices({cpu_devices})
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import bablate as bb
    from core_models import head_rule, trained_mlp
    model, variables, x, ys = trained_mlp()
    task = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, head_rule(ys, "sum"))
    masks = np.asarray(jax.random.bernoulli(jax.random.key(5), 0.5, (37, 12)), np.float32)
    post = bb.infer(task, "exact", chunk_size=1000)
    chains = bb.infer(task, "mcmc", key=jax.random.key(1), num_samples=500, num_warmup=50,
                      num_chains=4)
    print(json.dumps({{"devices": jax.device_count(),
                      "log_odds": task.log_odds(masks, chunk_size=16).tolist(),
                      "marginals": post.marginals.tolist(),
                      "chain_method": chains.diagnostics["chain_method"],
                      "mcmc_samples": chains.samples.tolist()}}))
""")


def _run(num_devices: int, cpu_devices: int = 0) -> dict:
    """The script in a subprocess with ``num_devices`` forced host devices (XLA_FLAGS), or
    with ``bablate.sharding.use_cpu_devices(cpu_devices)`` when that is given."""
    env = dict(os.environ, BABLATE_PROGRESS="0",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
    code = SCRIPT.format(tests=str(Path(__file__).parent), cpu_devices=cpu_devices)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_and_unsharded_results_are_identical():
    one, four, two = _run(1), _run(4), _run(1, cpu_devices=2)
    assert (one["devices"], four["devices"], two["devices"]) == (1, 4, 2)
    assert one["chain_method"] == "vectorized" and four["chain_method"] == "parallel"
    for many in (four, two):
        np.testing.assert_allclose(many["log_odds"], one["log_odds"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(many["marginals"], one["marginals"], rtol=1e-6, atol=1e-9)
        # Chains split over devices draw exactly what they draw as one batch on one device.
        np.testing.assert_array_equal(many["mcmc_samples"], one["mcmc_samples"])


def test_use_cpu_devices_refuses_bad_counts_and_late_calls():
    from bablate import sharding

    with pytest.raises(ValueError, match="at least 1"):
        sharding.use_cpu_devices(0)
    jax.devices()  # the backend is running now
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        sharding.use_cpu_devices(jax.device_count() + 1)


def test_shard_masks_splits_the_mask_axis_when_devices_allow():
    from bablate import sharding

    masks = np.ones((sharding.round_up(10), 3), np.float32)
    placed = sharding.shard_masks(masks)
    assert placed.shape == masks.shape
    if jax.device_count() > 1:  # CI runs the suite with 4 fake CPU devices
        assert len(placed.sharding.device_set) == jax.device_count()


@pytest.mark.slow
def test_mcmc_chains_spread_over_devices_agree_with_vectorized_chains():
    code = textwrap.dedent("""
        import json, sys
        import jax, numpy as np
        sys.path.insert(0, {tests!r})
        import bablate as bb
        from core_models import head_rule, trained_mlp
        model, variables, x, ys = trained_mlp()
        task = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, head_rule(ys, "sum"))
        kw = dict(key=jax.random.key(0), num_samples=4000, num_warmup=200, num_chains=4)
        par = bb.infer(task, "mcmc", chain_method="parallel", **kw)
        vec = bb.infer(task, "mcmc", chain_method="vectorized", **kw)
        print(json.dumps({{"par": par.marginals.tolist(), "vec": vec.marginals.tolist(),
                          "r_hat": par.diagnostics["r_hat_max"]}}))
    """).format(tests=str(Path(__file__).parent))
    env = dict(os.environ, BABLATE_PROGRESS="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # Same chains, same keys: the parallel map and vmap must produce the same draws.
    np.testing.assert_allclose(res["par"], res["vec"], atol=1e-6)
    assert res["r_hat"] < 1.05
