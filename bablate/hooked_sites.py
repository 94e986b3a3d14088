"""Sites on a forward pass that shows each of its values to a hook.

The flax front ends (:mod:`bablate.flax_sites` for linen, :mod:`bablate.nnx_sites` for nnx) turn a
model into a *runner*: ``run(inputs, on_value) -> outputs`` runs the model once and passes every
value a site can name through ``on_value(name, value) -> value`` — a submodule's output
(``"Block_0/Dense_1"``), its first positional argument (``"Dense_1:input"``) and each value
marked with :func:`mark` or flax's ``perturb`` (``"Block_0@act"``) — using whatever
``on_value`` returns in its place downstream. Recording, caching and masking are all
``on_value`` functions, so one module builds every kind of site from a runner:

* one place called once per forward pass: a cached site (the prefix records the value, the
  suffix puts the masked one in its place; under jit what only fed it is dead code);
* one place called several times (a recurrent cell): an in-place site masked at every call;
* several places (``["Dense_0", "Dense_1"]``): a *joint* site whose d = d₁ + d₂ + … units are
  masked where each of them lives, in one forward pass, so a later layer sees the earlier
  layer's masked value. Nothing can be cached; the mask is handed to the runner
  (:meth:`bablate.Site.mask_aware`). Mean ablation adds one intact pass over the task's inputs
  per evaluated batch of masks (it does not depend on the mask, so vmap does not repeat it).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bablate.sites import (
    Ablation,
    Basis,
    Site,
    check_unit_axis,
    mask_activation,
    mean_before,
)

OnValue = Callable[[str, Any], Any]
Runner = Callable[[Any, OnValue], Any]
PARTS = ("output", "input")
# While a runner runs the model: (module, name, value) -> the value to use, for `mark`.
_MARK_HOOK: contextvars.ContextVar[Callable[[Any, str, Any], Any] | None] = (
    contextvars.ContextVar("bablate_mark_hook", default=None))


def mark(module: Any, name: str, value: Any) -> Any:
    """Marks ``value`` inside ``module``'s forward pass as the site ``"<module path>@<name>"``.

    Call it in a flax module's ``__call__``, linen or nnx: ``h = bb.mark(self, "act", h)``.
    Outside bablate it returns ``value`` unchanged and does nothing else: unlike nnx's
    ``self.perturb`` (deprecated outside ``nnx.capture`` since flax 0.12, and a warning on
    every call of the model), it stores no variable and never warns. Inside
    :func:`bablate.flax_site`, :func:`bablate.nnx_site` and their ``run_with_cache`` and
    ``list_sites``, the value is recorded, cached or masked like a submodule's output.

    Args:
      module: the module whose forward pass holds the value (``self``).
      name: the mark's name, unique within the module.
      value: the array to mark.

    Returns:
      ``value``, or inside a site's forward pass the value that takes its place downstream.
    """
    hook = _MARK_HOOK.get()
    return value if hook is None else hook(module, name, value)


@contextlib.contextmanager
def marking(hook: Callable[[Any, str, Any], Any]) -> Iterator[None]:
    """Within it, :func:`mark` calls ``hook(module, name, value)`` (a runner sets it)."""
    token = _MARK_HOOK.set(hook)
    try:
        yield
    finally:
        _MARK_HOOK.reset(token)


def check_part(spec: str) -> None:
    """Refuses a part other than ``":input"`` after a submodule path (``"hidden:inpt"``) with a
    one-line error; ``"<path>"`` is the output and ``"<path>@<name>"`` a ``perturb``-marked
    value."""
    _, sep, part = spec.rpartition(":")
    if "@" not in spec and sep and part not in PARTS:
        raise ValueError(f"unknown site part {part!r} in {spec!r}; write '<path>' for a "
                         "submodule's output or '<path>:input' for its input.")


def is_array(x) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct)


def record(run: Runner, inputs: Any) -> tuple[Any, dict[str, list]]:
    """Runs once and returns ``(output, {name: [value per call, in call order]})``."""
    found: dict[str, list] = {}

    def on_value(name, value):
        if is_array(value):
            found.setdefault(name, []).append(value)
        return value

    return run(inputs, on_value), found


def cache(run: Runner, inputs: Any, inputs_too: bool) -> tuple[Any, dict[str, Any]]:
    """``(output, cache)`` of one run: each value, or a tuple of them for a place reached
    several times per forward pass; inputs (``"<path>:input"``) left out unless
    ``inputs_too``."""
    output, found = record(run, inputs)
    return output, {k: v[0] if len(v) == 1 else tuple(v) for k, v in found.items()
                    if inputs_too or not k.endswith(":input")}


def shapes(run: Runner, example_inputs: Any) -> dict[str, tuple[int, tuple]]:
    """``{name: (calls per forward pass, shape)}`` of every value, traced without computing."""
    found: dict[str, tuple[int, tuple]] = {}

    def trace(inputs):
        _, values = record(run, inputs)
        found.update({k: (len(v), tuple(v[0].shape)) for k, v in values.items()})

    jax.eval_shape(trace, example_inputs)
    return found


def listing(run: Runner, example_inputs: Any, inputs: bool) -> dict[str, tuple[int, tuple]]:
    """``list_sites``' answer: :func:`shapes`, without the ``":input"`` places unless
    ``inputs``."""
    found = shapes(run, example_inputs)
    return {k: v for k, v in found.items() if inputs or not k.endswith(":input")}


def as_specs(path: str | Sequence[str]) -> list[str]:
    """One site name or several (a joint site), as a list; refuses an empty or repeated list."""
    specs = [path] if isinstance(path, str) else list(path)
    if not specs or not all(isinstance(s, str) for s in specs):
        raise ValueError(f"a site is a name or a list of names, got {path!r}.")
    if len(set(specs)) != len(specs):
        raise ValueError(f"site list {specs} names a place twice; give each place once.")
    return specs


def build_site(run: Runner, specs: list[str], found: dict[str, tuple[int, tuple]], *,
               unit_axis: int, ablation: Ablation, basis: Basis | None,
               reference: jax.Array | None) -> Site:
    """The site at ``specs`` (names in ``found``, checked by the caller) of the runner."""
    if len(specs) > 1:
        return _joint_site(run, specs, found, unit_axis=unit_axis, ablation=ablation,
                           basis=basis, reference=reference)
    spec = specs[0]
    calls, shape = found[spec]
    num_units = basis.num_units if basis is not None else int(shape[unit_axis])
    if calls > 1:  # called several times per forward pass: masked at each, nothing cached
        def apply(inputs, ablate):
            return run(inputs, lambda name, value: ablate(value) if name == spec else value)

        return Site.in_place(spec, num_units, apply, ablation=ablation, reference=reference,
                             unit_axis=unit_axis, basis=basis)

    def prefix(inputs):
        _, values = record(run, inputs)
        return values[spec][0]

    def suffix(act, inputs):
        # The cached (masked) value takes the original's place downstream.
        return run(inputs, lambda name, value: act if name == spec else value)

    return Site.from_functions(spec, num_units, prefix, suffix, unit_axis=unit_axis,
                               ablation=ablation, basis=basis)


def _unit_mean(values: list, unit_axis: int) -> jax.Array:
    """The mean-ablation value of one place, over its calls as well (one per forward pass)."""
    stacked = jnp.stack([jnp.moveaxis(v, unit_axis, -1) for v in values])
    return mean_before(stacked, 1 + unit_axis % values[0].ndim)


def _joint_site(run: Runner, specs: list[str], found: dict[str, tuple[int, tuple]], *,
                unit_axis: int, ablation: Ablation, basis: Basis | None,
                reference: jax.Array | None) -> Site:
    name = "+".join(specs)
    if basis is not None:
        raise ValueError(f"joint site {name!r}: a basis acts on one activation; build one site "
                         "per place for a basis, or leave basis out.")
    if ablation not in ("zero", "mean"):
        raise ValueError(f"joint site {name!r}: ablation must be 'zero' or 'mean' (resampling "
                         f"needs one cached activation); got {ablation!r}.")
    if reference is not None:
        raise ValueError(f"joint site {name!r}: the mean of each place is taken from the task's "
                         "own inputs; leave reference out.")
    sizes = [int(found[s][1][unit_axis]) for s in specs]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    slices = {s: slice(a, a + n) for s, a, n in zip(specs, starts, sizes, strict=True)}

    def apply_mask(mask, inputs):
        # Mean ablation uses each place's mean over the task's inputs in the intact network.
        # That pass does not depend on the mask, so under vmap it runs once per batch of masks.
        fills = {s: 0.0 for s in specs}
        if ablation == "mean":
            _, values = record(run, inputs)
            fills = {s: _unit_mean(values[s], unit_axis) for s in specs}

        def on_value(place, value):
            if place not in slices:
                return value
            return mask_activation(value, mask[slices[place]], fills[place], unit_axis)

        return run(inputs, on_value)

    return Site.mask_aware(name, sum(sizes), apply_mask, ablation=ablation)


def site_at(run: Runner, path: str | Sequence[str], example_inputs: Any, model: Any, *,
            unit_axis: int, ablation: Ablation, basis: Basis | None,
            reference: jax.Array | None) -> Site:
    """The site named ``path`` (one name or a list: a joint site) of the runner's model.

    Raises:
      ValueError: a name is not a site; the one-line message lists the ones that exist.
    """
    specs = as_specs(path)
    found = shapes(run, example_inputs)
    for spec in specs:
        check_part(spec)
        if spec not in found:
            listing = ", ".join(f"{p} {shape} x{calls}" for p, (calls, shape) in found.items()
                                if not p.endswith(":input"))
            raise ValueError(f"Unknown site {spec!r} in {type(model).__name__}. Sites that "
                             "exist (name shape x calls per forward): "
                             f"{listing or 'none'}; append ':input' for a submodule's input; "
                             "'<path>@<name>' is a value marked with self.perturb(name, x).")
        if basis is None:  # a basis acts on the last axis whatever unit_axis says
            check_unit_axis(spec, unit_axis, found[spec][1])
    return build_site(run, specs, found, unit_axis=unit_axis, ablation=ablation, basis=basis,
                      reference=reference)
