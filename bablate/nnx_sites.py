"""Sites on flax nnx models.

``nnx_site(model, "linear1", x)`` points at the output of a submodule, ``"linear2:input"`` at its
input (its first positional argument), ``"block@act"`` at a value the model marks with
``bb.mark(self, "act", x)`` (or nnx's ``self.perturb("act", x)``) inside ``block`` (``"@act"``
in the top-level module), and a list of names at all their units jointly (see
:mod:`bablate.hooked_sites`).

The model is split once into its graph and state. Each run merges a fresh copy whose submodules
are wrapped and whose ``perturb`` is hooked, so the caller's model object (and any state it
updates, e.g. batch statistics) is never modified, and nnx's own ``perturb`` (which outside
``nnx.capture`` stores a variable and warns) is never called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from bablate import hooked_sites
from bablate.hooked_sites import OnValue, Runner, is_array
from bablate.sites import Ablation, Basis, Site


class _Replace:
    """Stands in for a submodule of a merged nnx model: calls ``fn(original, *args)``."""

    def __init__(self, original, fn):
        self.original, self.fn = original, fn

    def __call__(self, *args, **kwargs):
        return self.fn(self.original, *args, **kwargs)


def _submodules(model) -> dict[str, Any]:
    from flax import nnx

    out = {}
    for path, module in nnx.iter_modules(model):
        if path:
            out["/".join(str(p) for p in path)] = module
    return out


def _set_child(parent, name: str, value) -> None:
    if name.isdigit():
        parent[int(name)] = value
    else:
        object.__setattr__(parent, name, value)


def _check_model(model, what: str, linen_call: str) -> None:
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(f"{what} takes a flax nnx model, got {type(model).__name__}; for a "
                        f"linen model use {linen_call}.")


def runner(model) -> Runner:
    """``run(inputs, on_value)``: one call of a fresh copy of the nnx model that passes every
    submodule's input (``"<path>:input"``) and output (``"<path>"``), and every value marked
    with ``self.perturb(name, x)`` (``"<path>@<name>"``), through ``on_value``."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    def run(inputs, on_value: OnValue):
        copy = nnx.merge(graphdef, state)
        modules = _submodules(copy)
        for path, module in (("", copy), *modules.items()):
            def perturb(name, value, variable_type=None, path=path):
                del variable_type  # the value is the site; no variable is stored
                return on_value(f"{path}@{name}", value)

            object.__setattr__(module, "perturb", perturb)

        def wrapper(path):
            def call(original, *args, **kwargs):
                if args and is_array(args[0]):
                    args = (on_value(f"{path}:input", args[0]), *args[1:])
                out = original(*args, **kwargs)
                return on_value(path, out) if is_array(out) else out

            return call

        # Wrap in the parents taken before any wrapping, so nested submodules are wrapped too.
        parents = {"": copy, **modules}
        for path, module in modules.items():
            parent, _, name = path.rpartition("/")
            _set_child(parents[parent], name, _Replace(module, wrapper(path)))
        paths = {id(module): path for path, module in parents.items()}

        def marked(module, name, value):
            path = paths.get(id(module))
            return value if path is None else on_value(f"{path}@{name}", value)

        with hooked_sites.marking(marked):
            return copy(inputs)

    return run


def nnx_run_with_cache(model, inputs: Any, inputs_too: bool = True) -> tuple[Any, dict[str, Any]]:
    """Runs a flax nnx model once and returns ``(output, cache)``, as
    :func:`bablate.run_with_cache` does for linen: every submodule's output (``"linear1"``),
    every ``perturb``-marked value (``"block@act"``) and, unless ``inputs_too=False``, each
    submodule's first positional argument (``"linear2:input"``), keyed as :func:`nnx_site`
    names them. A place reached several times per forward pass gives a tuple, one array per
    call, in call order.
    """
    _check_model(model, "nnx_run_with_cache", "bb.run_with_cache(model, variables, inputs)")
    return hooked_sites.cache(runner(model), inputs, inputs_too)


def nnx_list_sites(model, example_inputs: Any, inputs: bool = False
                   ) -> dict[str, tuple[int, tuple]]:
    """Every place of a flax nnx model a mask can apply to, as :func:`bablate.list_sites`
    lists a linen model's: ``{name: (calls per forward pass, shape)}`` for each submodule's
    output (``"block/up"``), each value marked with ``bb.mark(self, name, x)`` or
    ``self.perturb(name, x)`` (``"block@act"``) and, with ``inputs=True``, each submodule's
    first positional argument (``"head:input"``); traced, nothing computed."""
    _check_model(model, "nnx_list_sites", "bb.list_sites(model, variables, example_inputs)")
    return hooked_sites.listing(runner(model), example_inputs, inputs)


def nnx_site(model, path: str | Sequence[str], example_inputs: Any, *, unit_axis: int = -1,
             ablation: Ablation = "zero", basis: Basis | None = None,
             reference: jax.Array | None = None) -> Site:
    """A site at the output of a submodule of a flax nnx model (``"linear1"``), at its input
    (its first positional argument, ``"linear2:input"``), at a value marked with
    ``self.perturb(name, x)`` (``"block@act"``), or a list of these as one joint site (the
    places' units concatenated in the order given; see :func:`bablate.flax_site`).

    Raises:
      ValueError: a name is not a site; the message lists the ones that exist.
    """
    _check_model(model, "nnx_site", "bb.flax_site(model, variables, path, inputs)")
    return hooked_sites.site_at(runner(model), path, example_inputs, model,
                                unit_axis=unit_axis, ablation=ablation, basis=basis,
                                reference=reference)
