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

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import bablate as bb
    from core_models import head_rule, trained_mlp
    model, variables, x, ys = trained_mlp()
    task = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, head_rule(ys, "sum"))
    masks = np.asarray(jax.random.bernoulli(jax.random.key(5), 0.5, (37, 12)), np.float32)
    post = bb.infer(task, "exact", chunk_size=1000)
    print(json.dumps({{"devices": jax.device_count(),
                      "log_odds": task.log_odds(masks, chunk_size=16).tolist(),
                      "marginals": post.marginals.tolist()}}))
""")


def _run(num_devices: int) -> dict:
    env = dict(os.environ, BABLATE_PROGRESS="0",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
    code = SCRIPT.format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_and_unsharded_results_are_identical():
    one, four = _run(1), _run(4)
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_allclose(four["log_odds"], one["log_odds"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(four["marginals"], one["marginals"], rtol=1e-6, atol=1e-9)


def test_shard_masks_splits_the_mask_axis_when_devices_allow():
    from bablate import sharding

    masks = np.ones((sharding.round_up(10), 3), np.float32)
    placed = sharding.shard_masks(masks)
    assert placed.shape == masks.shape
    if jax.device_count() > 1:  # CI runs the suite with 4 fake CPU devices
        assert len(placed.sharding.device_set) == jax.device_count()


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
