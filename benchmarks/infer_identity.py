"""Bit-identity of infer/infer_many across two checkouts (a refactor must not move a number).

    python benchmarks/infer_identity.py save before.npz   # on the old checkout
    python benchmarks/infer_identity.py save after.npz    # on the new one
    python benchmarks/infer_identity.py compare before.npz after.npz

Runs one call per call path of infer/infer_many that the tests use (each method and sampler,
"auto" on small and large sites, task sets and lists, options objects where the checkout has
them) with fixed seeds and saves every array and number of every posterior (timings left
out). ``compare`` checks them for exact equality; the options-object form of a call is
compared against the keyword form saved by the old checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from core_models import head_rule, trained_mlp  # noqa: E402

import bablate as bb  # noqa: E402

_SKIP = ("seconds",)


def _flatten(post, prefix: str, out: dict) -> None:
    for name in ("marginals", "samples", "log_probs", "log_density", "prior"):
        value = getattr(post, name, None)
        if value is not None:
            out[f"{prefix}/{name}"] = np.asarray(value)
    out[f"{prefix}/method"] = np.asarray(post.method)
    for name, value in sorted(post.diagnostics.items()):
        if name in _SKIP or isinstance(value, dict | str) or value is None:
            continue
        try:
            out[f"{prefix}/diagnostics/{name}"] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            out[f"{prefix}/diagnostics/{name}"] = np.asarray(str(value))
    for name, value in sorted((getattr(post, "sample_stats", None) or {}).items()):
        out[f"{prefix}/sample_stats/{name}"] = np.asarray(value)


def _calls():
    """(name, function, positional args, other keywords, method, its options in keywords)."""
    model, variables, x, ys = trained_mlp()
    site = bb.flax_site(model, variables, "Dense_0", x)
    task = bb.Task.build(site, x, head_rule(ys, "sum"), name="sum")
    m8, v8, x8, ys8 = trained_mlp(hidden=8)
    site8 = bb.flax_site(m8, v8, "Dense_0", x8)
    task_set = bb.TaskSet.build(site8, x8, {h: head_rule(ys8, h) for h in ("sum", "diff")})
    key = jax.random.key(3)
    prior = np.linspace(0.3, 0.7, 12)
    mc = dict(num_samples=200, num_warmup=50, num_chains=2)
    sv = dict(num_steps=40, steps_per_call=10, num_draws=20)
    im = dict(max_masks=1024, min_masks=256, round_masks=256, num_draws=50)
    yield "exact", "infer", (task, "exact"), {}, "exact", {}
    yield ("exact_smooth_chunk", "infer", (task, "exact"), dict(prior=prior, beta=0.7), "exact",
           dict(smooth=True, chunk_size=512))
    yield "auto_small", "infer", (task, "auto"), {}, "exact", {}
    for sampler, flips in (("informed", "multi"), ("gradient", "multi"),
                           ("informed", "single"), ("stock", "multi")):
        yield (f"mcmc_{sampler}_{flips}", "infer", (task, "mcmc", key), {}, "mcmc",
               dict(mc, sampler=sampler, flips=flips))
    yield ("mcmc_sequential", "infer", (task, "mcmc", key, prior, 0.5), {}, "mcmc",
           dict(mc, chain_method="sequential", thinning=2, step_size=0.5,
                init_mask=np.zeros(12)))
    yield "svi_score", "infer", (task, "svi", key), {}, "svi", sv
    yield ("svi_concrete", "infer", (task, "svi", key), {}, "svi",
           dict(sv, estimator="concrete", learning_rate=0.1, temperature=0.3))
    yield "importance", "infer", (task, "importance", key), {}, "importance", im
    yield ("importance_plain", "infer", (task, "importance", key, prior), {}, "importance",
           dict(im, adapt=False, components=1, defensive=0.5, target_se=0.05))
    yield "auto_large", "infer", (task, "auto", key), dict(max_exact=4), "importance", im
    yield "many_auto_exact", "infer_many", (task_set, "auto"), {}, "exact", {}
    yield ("many_auto_exact_opts", "infer_many", (task_set, "auto"), dict(num_samples=10),
           "exact", dict(chunk_size=64))
    yield ("many_exact_list", "infer_many", (list(task_set), "exact"), {}, "exact",
           dict(chunk_size=128))
    for large, o in (("svi", sv), ("mcmc", mc), ("importance", im)):
        yield (f"many_auto_{large}", "infer_many", (task_set, "auto", key),
               dict(max_exact=4, large=large), large, o)
    yield "many_mcmc", "infer_many", (task_set, "mcmc", key), {}, "mcmc", mc


def save(path: str) -> None:
    out: dict = {}
    has_options = hasattr(bb, "McmcOptions")
    for name, fn, args, kw, method, opts in _calls():
        forms = {name: dict(kw, **opts)}
        if has_options and opts and "num_samples" not in kw:
            cls = {"exact": bb.ExactOptions, "mcmc": bb.McmcOptions, "svi": bb.SviOptions,
                   "importance": bb.ImportanceOptions}[method]
            forms[f"{name}@options"] = dict(kw, options=cls(**opts))
        for form, kwargs in forms.items():
            posts = getattr(bb, fn)(*args, **kwargs)
            for i, post in enumerate(posts if isinstance(posts, list) else [posts]):
                _flatten(post, f"{form}/{i}", out)
            print(form, flush=True)
    np.savez(path, **out)


def compare(before: str, after: str) -> int:
    a, b = np.load(before), np.load(after)
    calls = sorted({k.split("/")[0] for k in b.files})
    bad = 0
    for call in calls:
        base = call.split("@")[0]
        keys = [k for k in b.files if k.split("/")[0] == call]
        mismatched = [k for k in keys if base + k[len(call):] not in a.files
                      or not np.array_equal(a[base + k[len(call):]], b[k])]
        missing = [k for k in a.files if k.split("/")[0] == base
                   and call + k[len(base):] not in b.files]
        ok = not mismatched and not missing
        bad += not ok
        print(f"{'identical' if ok else 'DIFFERENT'}: {call} ({len(keys)} arrays)"
              + (f" {mismatched[:3]} {missing[:3]}" if not ok else ""))
    print(f"{len(calls) - bad} of {len(calls)} calls bit-identical")
    return int(bad > 0)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
