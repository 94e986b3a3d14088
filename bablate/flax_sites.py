"""Sites on flax linen models, found by method interception.

``flax_site(model, variables, "Dense_1", x)`` points at the output of a submodule, and
``"Dense_1:input"`` at its input (its first positional argument), without touching the model's
code. The input of the layer after an activation function is the post-activation value (in the
README's MLP, ``"Dense_1:input"`` is relu of ``"hidden"``, TransformerLens' ``hook_post``).
A value inside a module that the model marks with flax's ``self.perturb("act", x)`` is the
site ``"<module path>@act"`` (``"Block_0@act"``; ``"@act"`` at the top-level module): ``@``
cannot appear in a submodule path, so the name never reads as a submodule. A list of names
(``["Dense_0", "Dense_1"]``) is one *joint* site over all their units.

:func:`flax.linen.intercept_methods` sees every module call; the interceptor shows each
submodule's input and output, and each value passed to ``perturb`` (hooked on the bound module
for the duration of one ``apply``), to the hook of :mod:`bablate.hooked_sites`, which records,
caches or masks them. The ``perturbations`` collection itself is not needed (``perturb`` is a
no-op without it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bablate import hooked_sites
from bablate.hooked_sites import OnValue, Runner, is_array
from bablate.sites import Ablation, Basis, Site


def _path(context) -> str:
    return "/".join(str(p) for p in context.module.path)


def _hook_perturb(context, on_value: OnValue) -> None:
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
        if (module.scope.has_variable(collection, name) and is_array(value)
                and jnp.shape(module.scope.get_variable(collection, name)) != value.shape):
            raise ValueError(f"variables[{collection!r}] holds {name!r} for {path or 'the model'}"
                             " with shape "
                             f"{jnp.shape(module.scope.get_variable(collection, name))}, made by "
                             f"init on another batch, but the value has shape {value.shape}; "
                             f"pass the variables without it, e.g. {{'params': "
                             f"variables['params']}}.")
        return on_value(f"{path}@{name}", original(module, name, value, collection))

    object.__setattr__(module, "perturb", perturb)


def runner(model: nn.Module, variables: Any, method: str = "__call__",
           **apply_kwargs) -> Runner:
    """``run(inputs, on_value)``: one ``model.apply`` that passes every submodule's input
    (``"<path>:input"``) and ``method`` output (``"<path>"``), and every ``perturb``-marked
    value (``"<path>@<name>"``), through ``on_value`` (see :mod:`bablate.hooked_sites`)."""

    def run(inputs, on_value: OnValue):
        def intercept(next_fun, args, kwargs, context):
            _hook_perturb(context, on_value)
            path = _path(context)
            at_site = bool(path) and context.method_name == method
            if at_site and args and is_array(args[0]):
                args = (on_value(f"{path}:input", args[0]), *args[1:])
            out = next_fun(*args, **kwargs)
            return on_value(path, out) if at_site and is_array(out) else out

        def marked(module, name, value):
            return on_value(f"{'/'.join(str(p) for p in module.path)}@{name}", value)

        with nn.intercept_methods(intercept), hooked_sites.marking(marked):
            return model.apply(variables, inputs, **apply_kwargs)

    return run


def list_sites(model: nn.Module, variables: Any, example_inputs: Any,
               method: str = "__call__", inputs: bool = False,
               **apply_kwargs) -> dict[str, tuple[int, tuple]]:
    """Every submodule output (and with ``inputs=True``, input) a mask can apply to.

    Returns:
      ``{path: (calls_per_forward, shape)}`` for every submodule whose ``method`` returns a
      single array, paths joined with "/" (e.g. ``"Block_0/Dense_1"``); every array value
      marked with ``bb.mark(self, name, x)`` or ``self.perturb(name, x)``, as
      ``"<path>@<name>"``; with ``inputs``, also
      ``"<path>:input"`` for those whose first positional argument is an array.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"list_sites takes a flax linen model, got {type(model).__name__}; "
                        "for a flax nnx model use bb.nnx_list_sites(model, example_inputs).")
    return hooked_sites.listing(runner(model, variables, method, **apply_kwargs),
                                example_inputs, inputs)


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
    return hooked_sites.cache(runner(model, variables, method, **apply_kwargs), inputs,
                              inputs_too)


def flax_site(model: nn.Module, variables: Any, path: str | Sequence[str], example_inputs: Any,
              *, method: str = "__call__", unit_axis: int = -1, ablation: Ablation = "zero",
              basis: Basis | None = None, reference: jax.Array | None = None,
              **apply_kwargs) -> Site:
    """A site at the output or input of a submodule of a flax linen model, at a value inside
    a module that the model marks with ``self.perturb(name, x)``, or jointly at several.

    Args:
      model: the linen module (unchanged; nothing in it needs rewriting).
      variables: its variables, e.g. ``{"params": ...}``.
      path: the submodule path, e.g. ``"Dense_0"`` or ``"encoder/hidden"`` (its output), or
        ``"Dense_1:input"`` (its first positional argument: after an activation function,
        the post-activation value), or ``"Block_0@act"`` (the value ``Block_0`` passes to
        ``self.perturb("act", ...)``; ``"@act"`` in the top-level module). A list of such
        names is one joint site: its units are the places' units concatenated in the order
        given, each masked where it lives in one forward pass (a later place sees the earlier
        one's masked value), with zero or mean ablation (each place's mean over the task's
        inputs); nothing is cached.
      example_inputs: inputs with the dataset's structure (used to find the sites).
      method: which submodule method's output to mask.
      unit_axis: axis of the output that holds the units.
      ablation: "zero", "mean" or "resample".
      basis: optional linear basis whose codes are masked instead of neurons.
      reference: activations for the mean of an in-place (recurrent) site.
      **apply_kwargs: extra keyword arguments for ``model.apply``.

    Raises:
      ValueError: a name is not a site; the message lists the ones that exist.
    """
    run = runner(model, variables, method, **apply_kwargs)
    return hooked_sites.site_at(run, path, example_inputs, model, unit_axis=unit_axis,
                                ablation=ablation, basis=basis, reference=reference)
