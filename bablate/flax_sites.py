"""Sites on flax linen models, found by method interception.

``flax_site(model, variables, "Dense_1", x)`` points at the output of a submodule, and
``"Dense_1:input"`` at its input (its first positional argument), without touching the model's
code. The input of the layer after an activation function is the post-activation value (in the
README's MLP, ``"Dense_1:input"`` is relu of ``"hidden"``, TransformerLens' ``hook_post``).
:func:`flax.linen.intercept_methods` sees every module call, so the prefix records the value
and the suffix replaces it with the masked, cached one.
A value inside a module that the model marks with flax's ``self.perturb("act", x)`` is the
site ``"<module path>@act"`` (``"Block_0@act"``; ``"@act"`` at the top-level module): ``@``
cannot appear in a submodule path, so the name never reads as a submodule. The interceptor
hooks ``perturb`` on the bound module for the duration of one ``apply``: the prefix records
the marked value and the suffix returns the masked one in its place. The ``perturbations``
collection itself is not needed (``perturb`` is a no-op without it).
Under ``jit`` the computation that only fed the replaced submodule is dead code and XLA drops
it, which is what makes the cached suffix cheap. A submodule called more than once per forward
pass (a recurrent cell) cannot be cached; it becomes an in-place site masked at every call.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bablate.sites import Ablation, Basis, Site


def _path(context) -> str:
    return "/".join(str(p) for p in context.module.path)


PARTS = ("output", "input")


def split_site(spec: str) -> tuple[str, str]:
    """``"enc/Dense_1:input"`` -> ``("enc/Dense_1", "input")``; no suffix means the output;
    ``"Block_0@act"`` -> ``("Block_0@act", "named")`` (a value marked with ``perturb``)."""
    if "@" in spec:
        return spec, "named"
    path, sep, part = spec.rpartition(":")
    if not sep:
        return spec, "output"
    if part not in PARTS:
        raise ValueError(f"unknown site part {part!r} in {spec!r}; write '<path>' for a "
                         "submodule's output or '<path>:input' for its input.")
    return path, part


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct)


def _hook_perturb(context, on_value) -> None:
    """Makes ``self.perturb(name, value)`` inside this call of ``context.module`` return
    ``on_value("<path>@<name>", flax's own result)``.

    The bound module is a fresh clone made by this ``apply``, so setting the attribute on it
    leaves the user's model untouched; instance attributes shadow the class's method.
    """
    module = context.module
    original = type(module).perturb
    path = _path(context)

    def perturb(name, value, collection="perturbations"):
        # init stores zeros shaped like that batch's value; another batch size cannot add them.
        if (module.scope.has_variable(collection, name) and _is_array(value)
                and jnp.shape(module.scope.get_variable(collection, name)) != value.shape):
            raise ValueError(f"variables[{collection!r}] holds {name!r} for {path or 'the model'}"
                             " with shape "
                             f"{jnp.shape(module.scope.get_variable(collection, name))}, made by "
                             f"init on another batch, but the value has shape {value.shape}; "
                             f"pass the variables without it, e.g. {{'params': "
                             f"variables['params']}}.")
        return on_value(f"{path}@{name}", original(module, name, value, collection))

    object.__setattr__(module, "perturb", perturb)


def list_sites(model: nn.Module, variables: Any, example_inputs: Any,
               method: str = "__call__", inputs: bool = False,
               **apply_kwargs) -> dict[str, tuple[int, tuple]]:
    """Every submodule output (and with ``inputs=True``, input) a mask can apply to.

    Returns:
      ``{path: (calls_per_forward, shape)}`` for every submodule whose ``method`` returns a
      single array, paths joined with "/" (e.g. ``"Block_0/Dense_1"``); every array value
      marked with ``self.perturb(name, x)``, as ``"<path>@<name>"``; with ``inputs``, also
      ``"<path>:input"`` for those whose first positional argument is an array.
    """
    found: dict[str, list] = {}

    def named(name, value):
        if _is_array(value):
            entry = found.setdefault(name, [0, tuple(value.shape)])
            entry[0] += 1
        return value

    def record(next_fun, args, kwargs, context):
        _hook_perturb(context, named)
        out = next_fun(*args, **kwargs)
        path = _path(context)
        if path and context.method_name == method and _is_array(out):
            entry = found.setdefault(path, [0, tuple(out.shape)])
            entry[0] += 1
            if inputs and args and _is_array(args[0]):
                entry = found.setdefault(f"{path}:input", [0, tuple(args[0].shape)])
                entry[0] += 1
        return out

    def run(inputs):
        with nn.intercept_methods(record):
            return model.apply(variables, inputs, **apply_kwargs)

    jax.eval_shape(run, example_inputs)
    return {k: (v[0], v[1]) for k, v in found.items()}


def run_with_cache(model: nn.Module, variables: Any, inputs: Any, method: str = "__call__",
                   inputs_too: bool = True, **apply_kwargs) -> tuple[Any, dict[str, Any]]:
    """Runs the model once and returns ``(output, cache)``: every site's activation for this
    batch, keyed as :func:`list_sites` and :func:`flax_site` name them (``"hidden"``,
    ``"Dense_0:input"``, ``"Block_0@act"``; inputs left out with ``inputs_too=False``).

    A submodule called once gives an array; one called several times per forward pass (a
    recurrent cell) gives a tuple with one array per call, in call order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"run_with_cache takes a flax linen model, got {type(model).__name__}; "
                        "for a flax nnx model use bb.nnx_run_with_cache(model, inputs).")
    found: dict[str, list] = {}

    def named(name, value):
        if _is_array(value):
            found.setdefault(name, []).append(value)
        return value

    def record(next_fun, args, kwargs, context):
        _hook_perturb(context, named)
        out = next_fun(*args, **kwargs)
        path = _path(context)
        if path and context.method_name == method and _is_array(out):
            found.setdefault(path, []).append(out)
            if inputs_too and args and _is_array(args[0]):
                found.setdefault(f"{path}:input", []).append(args[0])
        return out

    with nn.intercept_methods(record):
        output = model.apply(variables, inputs, **apply_kwargs)
    return output, {k: v[0] if len(v) == 1 else tuple(v) for k, v in found.items()}


def flax_site(model: nn.Module, variables: Any, path: str, example_inputs: Any, *,
              method: str = "__call__", unit_axis: int = -1, ablation: Ablation = "zero",
              basis: Basis | None = None, reference: jax.Array | None = None,
              **apply_kwargs) -> Site:
    """A site at the output or input of a submodule of a flax linen model, or at a value
    inside a module that the model marks with ``self.perturb(name, x)``.

    Args:
      model: the linen module (unchanged; nothing in it needs rewriting).
      variables: its variables, e.g. ``{"params": ...}``.
      path: the submodule path, e.g. ``"Dense_0"`` or ``"encoder/hidden"`` (its output), or
        ``"Dense_1:input"`` (its first positional argument: after an activation function,
        the post-activation value), or ``"Block_0@act"`` (the value ``Block_0`` passes to
        ``self.perturb("act", ...)``; ``"@act"`` in the top-level module).
      example_inputs: inputs with the dataset's structure (used to find the sites).
      method: which submodule method's output to mask.
      unit_axis: axis of the output that holds the units.
      ablation: "zero", "mean" or "resample".
      basis: optional linear basis whose codes are masked instead of neurons.
      reference: activations for the mean of an in-place (recurrent) site.
      **apply_kwargs: extra keyword arguments for ``model.apply``.

    Raises:
      ValueError: the path is not a site; the message lists the ones that exist.
    """
    spec = path
    module_path, part = split_site(spec)
    sites = list_sites(model, variables, example_inputs, method=method,
                       inputs=part == "input", **apply_kwargs)
    if spec not in sites:
        listing = ", ".join(f"{p} {shape} x{calls}" for p, (calls, shape) in sites.items()
                            if not p.endswith(":input"))
        raise ValueError(f"Unknown site {spec!r} in {type(model).__name__}. Sites that exist "
                         f"(path shape x calls per forward): {listing or 'none'}; append "
                         "':input' for a submodule's input; '<path>@<name>' is a value "
                         "marked with self.perturb(name, x).")
    calls, shape = sites[spec]
    num_units = basis.num_units if basis is not None else int(shape[unit_axis])
    if part == "named":
        return _named_site(model, variables, spec, calls, num_units, unit_axis=unit_axis,
                           ablation=ablation, basis=basis, reference=reference,
                           **apply_kwargs)
    on_input = part == "input"

    def matches(context) -> bool:
        return _path(context) == module_path and context.method_name == method

    if calls > 1:
        def apply(inputs, ablate):
            def intercept(next_fun, args, kwargs, context):
                if matches(context) and on_input:
                    return next_fun(ablate(args[0]), *args[1:], **kwargs)
                out = next_fun(*args, **kwargs)
                return ablate(out) if matches(context) else out

            with nn.intercept_methods(intercept):
                return model.apply(variables, inputs, **apply_kwargs)

        return Site.in_place(spec, num_units, apply, ablation=ablation, reference=reference,
                             unit_axis=unit_axis, basis=basis)

    def prefix(inputs):
        captured = []

        def intercept(next_fun, args, kwargs, context):
            if matches(context) and on_input:
                captured.append(args[0])
            out = next_fun(*args, **kwargs)
            if matches(context) and not on_input:
                captured.append(out)
            return out

        with nn.intercept_methods(intercept):
            model.apply(variables, inputs, **apply_kwargs)
        return captured[0]

    def suffix(act, inputs):
        def intercept(next_fun, args, kwargs, context):
            # The cached (masked) value replaces the call's output, or its input: what only
            # fed it is dead code under jit.
            if not matches(context):
                return next_fun(*args, **kwargs)
            return next_fun(act, *args[1:], **kwargs) if on_input else act

        with nn.intercept_methods(intercept):
            return model.apply(variables, inputs, **apply_kwargs)

    return Site.from_functions(spec, num_units, prefix, suffix, unit_axis=unit_axis,
                               ablation=ablation, basis=basis)


def _named_site(model, variables, spec: str, calls: int, num_units: int, *, unit_axis,
                ablation, basis, reference, **apply_kwargs) -> Site:
    """The site at a ``perturb``-marked value: ``spec`` is ``"<path>@<name>"``."""

    def run(inputs, on_value):
        def intercept(next_fun, args, kwargs, context):
            _hook_perturb(context, on_value)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(intercept):
            return model.apply(variables, inputs, **apply_kwargs)

    if calls > 1:  # marked at several calls per forward pass: masked at each, nothing cached
        def apply(inputs, ablate):
            return run(inputs, lambda name, value: ablate(value) if name == spec else value)

        return Site.in_place(spec, num_units, apply, ablation=ablation, reference=reference,
                             unit_axis=unit_axis, basis=basis)

    def prefix(inputs):
        captured = []

        def capture(name, value):
            if name == spec:
                captured.append(value)
            return value

        run(inputs, capture)
        return captured[0]

    def suffix(act, inputs):
        # The cached (masked) value takes the marked value's place downstream.
        return run(inputs, lambda name, value: act if name == spec else value)

    return Site.from_functions(spec, num_units, prefix, suffix, unit_axis=unit_axis,
                               ablation=ablation, basis=basis)


# ---- flax nnx --------------------------------------------------------------------------------


class _Replace:
    """Stands in for a submodule of a merged nnx model: calls ``fn(original, *args)``."""

    def __init__(self, original, fn):
        self.original, self.fn = original, fn

    def __call__(self, *args, **kwargs):
        return self.fn(self.original, *args, **kwargs)


def _nnx_submodules(model) -> dict[str, Any]:
    from flax import nnx

    out = {}
    for path, module in nnx.iter_modules(model):
        if path:
            out["/".join(str(p) for p in path)] = module
    return out


def _nnx_with(graphdef, state, path: str, fn):
    """A fresh copy of the nnx model whose submodule at ``path`` is wrapped by ``fn``."""
    from flax import nnx

    model = nnx.merge(graphdef, state)
    *parents, last = path.split("/")
    parent = model
    for name in parents:
        parent = parent[int(name)] if name.isdigit() else getattr(parent, name)
    if last.isdigit():
        parent[int(last)] = _Replace(parent[int(last)], fn)
    else:
        object.__setattr__(parent, last, _Replace(getattr(parent, last), fn))
    return model


def _set_child(parent, name: str, value) -> None:
    if name.isdigit():
        parent[int(name)] = value
    else:
        object.__setattr__(parent, name, value)


def nnx_run_with_cache(model, inputs: Any, inputs_too: bool = True) -> tuple[Any, dict[str, Any]]:
    """Runs a flax nnx model once and returns ``(output, cache)``, as :func:`run_with_cache`
    does for linen: every submodule's output (``"linear1"``) and, unless ``inputs_too=False``,
    its first positional argument (``"linear2:input"``), keyed as :func:`nnx_site` names them.

    The model runs as a merged copy of its graph and state whose submodules are wrapped, so
    the caller's model object (and any state it updates, e.g. batch statistics) is untouched.
    A submodule called several times per forward pass gives a tuple, one array per call.
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(f"nnx_run_with_cache takes a flax nnx model, got {type(model).__name__}"
                        "; for a linen model use bb.run_with_cache(model, variables, inputs).")
    copy = nnx.merge(*nnx.split(model))
    found: dict[str, list] = {}

    def recorder(path):
        def record(original, *args, **kwargs):
            out = original(*args, **kwargs)
            if _is_array(out):
                found.setdefault(path, []).append(out)
            if inputs_too and args and _is_array(args[0]):
                found.setdefault(f"{path}:input", []).append(args[0])
            return out

        return record

    # Wrap in the parents taken before any wrapping, so nested submodules are wrapped as well.
    modules = _nnx_submodules(copy)
    parents = {"": copy, **modules}
    for path, module in modules.items():
        parent, _, name = path.rpartition("/")
        _set_child(parents[parent], name, _Replace(module, recorder(path)))
    output = copy(inputs)
    return output, {k: v[0] if len(v) == 1 else tuple(v) for k, v in found.items()}


def nnx_site(model, path: str, example_inputs: Any, *, unit_axis: int = -1,
             ablation: Ablation = "zero", basis: Basis | None = None,
             reference: jax.Array | None = None) -> Site:
    """A site at the output of a submodule of a flax nnx model (e.g. ``"linear1"``), or at its
    input (its first positional argument, e.g. ``"linear2:input"``).

    The model is split once into its graph and state; each evaluation merges a fresh copy whose
    submodule is wrapped, so the caller's model object is never modified.

    Raises:
      ValueError: the path is not a submodule; the message lists the ones that exist.
    """
    from flax import nnx

    spec = path
    path, part = split_site(spec)
    on_input = part == "input"
    modules = _nnx_submodules(model)
    if path not in modules:
        raise ValueError(f"Unknown site {path!r} in {type(model).__name__}. Submodules that "
                         f"exist: {', '.join(modules) or 'none'} (append ':input' for a "
                         "submodule's input).")
    graphdef, state = nnx.split(model)
    calls, shapes = [0], []

    def count(original, *args, **kwargs):
        out = original(*args, **kwargs)
        calls[0] += 1
        if on_input and not (args and _is_array(args[0])):
            raise ValueError(f"site {spec!r}: the submodule's first positional argument is not "
                             "an array; use its output instead.")
        shapes.append(tuple((args[0] if on_input else out).shape))
        return out

    jax.eval_shape(lambda x: _nnx_with(graphdef, state, path, count)(x), example_inputs)
    num_units = basis.num_units if basis is not None else int(shapes[0][unit_axis])

    if calls[0] > 1:
        def apply(inputs, ablate):
            def wrap(original, *a, **k):
                if on_input:
                    return original(ablate(a[0]), *a[1:], **k)
                return ablate(original(*a, **k))

            return _nnx_with(graphdef, state, path, wrap)(inputs)

        return Site.in_place(spec, num_units, apply, ablation=ablation, reference=reference,
                             unit_axis=unit_axis, basis=basis)

    def prefix(inputs):
        captured = []

        def capture(original, *args, **kwargs):
            out = original(*args, **kwargs)
            captured.append(args[0] if on_input else out)
            return out

        _nnx_with(graphdef, state, path, capture)(inputs)
        return captured[0]

    def suffix(act, inputs):
        def replace(original, *args, **kwargs):
            return original(act, *args[1:], **kwargs) if on_input else act

        return _nnx_with(graphdef, state, path, replace)(inputs)

    return Site.from_functions(spec, num_units, prefix, suffix, unit_axis=unit_axis,
                               ablation=ablation, basis=basis)
