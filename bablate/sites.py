"""Sites: the d units of a network where an ablation mask applies.

A site splits a network in two so that masks are cheap to evaluate:

* a *cached* site has a ``prefix`` (inputs -> activation at the site), which does not depend on
  the mask and runs once per dataset, and a ``suffix`` (activation, inputs -> outputs), which is
  the only part vmapped over a batch of masks;
* an *in-place* site has one ``apply(inputs, ablate)`` in which the network calls ``ablate`` on
  the activation wherever the mask applies (every time step of an RNN, say). Nothing can be
  cached, so the whole network runs per mask;
* a *mask-aware* site hands the mask itself to a network that applies it (units spread over
  several layers, such as every attention head of a transformer). The network then owns the
  ablation value and whatever caching it can do.

Units live on one axis of the activation (``unit_axis``), in the neuron basis by default or in
any linear basis (a learned dictionary, a rotation): ``codes = (act - mean) @ encoder`` and the
masked activation is ``act + (codes' - codes) @ decoder``, so the reconstruction error stays
intact and the all-ones mask reproduces the network exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Ablation = Literal["zero", "mean", "resample"]
ABLATIONS = ("zero", "mean", "resample")


@dataclasses.dataclass(frozen=True, eq=False)
class Basis:
    """A linear basis for a site's units.

    Attributes:
      encoder: ``[d_act, k]`` maps a (centred) activation to k codes.
      decoder: ``[k, d_act]`` maps codes back to the activation.
      center: ``[d_act]`` subtracted before encoding (zeros for a plain change of basis).
      name: a label for reports.
    """

    encoder: Array
    decoder: Array
    center: Array | None = None
    name: str = "basis"

    def __post_init__(self):
        enc, dec = jnp.shape(self.encoder), jnp.shape(self.decoder)
        if len(enc) != 2 or len(dec) != 2 or enc != dec[::-1]:
            raise ValueError(f"Basis {self.name!r}: encoder must be [d_act, k] and decoder "
                             f"[k, d_act]; got encoder {enc} and decoder {dec}.")
        if self.center is not None and jnp.shape(self.center) != (enc[0],):
            raise ValueError(f"Basis {self.name!r}: center must be [d_act] = ({enc[0]},), got "
                             f"shape {jnp.shape(self.center)}.")

    @property
    def num_units(self) -> int:
        return int(self.encoder.shape[1])

    def check_width(self, act_shape: tuple[int, ...], what: str) -> None:
        """Refuses an activation whose last axis is not the width the basis was made for."""
        width = int(self.decoder.shape[1])
        if not act_shape or act_shape[-1] != width:
            raise ValueError(f"{what}: basis {self.name!r} maps activations of width {width} (its "
                             f"decoder is [{self.num_units}, {width}]) but the activation has "
                             f"shape {tuple(act_shape)}; use a basis fitted on this site's "
                             "activations (their last axis).")

    def encode(self, act: Array) -> Array:
        if self.center is not None:
            act = act - _lift(self.center, act.ndim)
        return act @ self.encoder

    @classmethod
    def orthogonal(cls, q: Array, name: str = "rotation") -> Basis:
        """A rotation of the neuron basis from an orthogonal ``q`` (``[d, d]``, columns = units)."""
        return cls(encoder=q, decoder=q.T, name=name)


def _move_units_last(x: Array, unit_axis: int) -> Array:
    return jnp.moveaxis(x, unit_axis, -1)


def _lift(v, ndim: int) -> Array:
    """Adds leading axes so ``v`` broadcasts against a rank-``ndim`` array explicitly."""
    v = jnp.asarray(v)
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def check_mask_values(masks: np.ndarray, what: str) -> None:
    """Refuses mask values outside [0, 1] (NaN included) with a clear error."""
    inside = (masks >= 0) & (masks <= 1)
    if not np.all(inside):
        raise ValueError(f"{what}: mask values must lie in [0, 1] (1 keeps a unit, 0 ablates "
                         f"it); got {masks[~inside].ravel()[0]!r}.")


def mask_activation(act: Array, mask: Array, value: Array | float, unit_axis: int = -1,
                    basis: Basis | None = None) -> Array:
    """Applies one mask to an activation.

    Args:
      act: activation with the units on ``unit_axis`` (neuron basis) or on the last axis
        (``basis`` given; the basis acts on the last axis).
      mask: ``[d]`` with 1 = keep, 0 = ablate (floats in between interpolate, which the smooth
        likelihood and the gradient-informed sampler use).
      value: the ablation value in unit space, broadcastable to the activation (0 for zero
        ablation, the dataset mean for mean ablation, another example's value for resampling).
      unit_axis: which axis holds the units (neuron basis only).
      basis: optional linear basis; masks then act on its codes.

    Returns:
      The masked activation, same shape and dtype as ``act``.
    """
    if basis is not None:
        basis.check_width(jnp.shape(act), "mask_activation")
    d = basis.num_units if basis is not None else jnp.shape(act)[unit_axis]
    if jnp.shape(mask) != (d,):  # shapes are known when traced too
        where = (f"basis {basis.name!r} has {d} units" if basis is not None else
                 f"the activation of shape {tuple(jnp.shape(act))} has {d} units on axis "
                 f"{unit_axis}")
        raise ValueError(f"mask_activation: the mask has shape {tuple(jnp.shape(mask))} but "
                         f"{where}; pass one mask value per unit, shape ({d},).")
    if not isinstance(mask, jax.core.Tracer):  # concrete masks are checked; traced ones can't be
        check_mask_values(np.asarray(mask), "mask_activation")
    if basis is None:
        units_last = _move_units_last(act, unit_axis)
        m, v = _lift(mask, units_last.ndim), _lift(value, units_last.ndim)
        out = units_last * m + v * (1.0 - m)
        return jnp.moveaxis(out.astype(act.dtype), -1, unit_axis)
    codes = basis.encode(act)
    m, v = _lift(mask, codes.ndim), _lift(value, codes.ndim)
    new_codes = codes * m + v * (1.0 - m)
    return (act + (new_codes - codes) @ basis.decoder).astype(act.dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Site:
    """d units of a network where a mask applies (see module docstring).

    Build one with :meth:`from_functions`, :meth:`in_place` or :func:`bablate.flax_site`.
    """

    name: str
    num_units: int
    prefix: Callable[[Any], Array] | None = None
    suffix: Callable[[Array, Any], Any] | None = None
    apply: Callable[[Any, Callable[[Array], Array]], Any] | None = None
    apply_mask: Callable[[Array, Any], Any] | None = None
    unit_axis: int = -1
    ablation: Ablation = "zero"
    basis: Basis | None = None
    reference: Array | None = None

    def __post_init__(self):
        if self.ablation not in ABLATIONS:
            raise ValueError(f"Site {self.name!r}: unknown ablation {self.ablation!r}; "
                             f"choose one of {ABLATIONS}.")
        if self.num_units < 1:
            raise ValueError(f"Site {self.name!r} has num_units={self.num_units}; need >= 1.")
        kinds = [self.prefix is not None and self.suffix is not None, self.apply is not None,
                 self.apply_mask is not None]
        if sum(kinds) != 1 or (self.prefix is None) != (self.suffix is None):
            raise ValueError(f"Site {self.name!r}: give exactly one of prefix+suffix (cached), "
                             "apply (in place) or apply_mask (mask-aware).")
        if self.apply_mask is not None and (self.basis is not None or self.ablation == "resample"):
            raise ValueError(f"Site {self.name!r}: a mask-aware network applies masks itself; "
                             "set its ablation value inside the network (ablation= only says "
                             "which one, 'zero' or 'mean'), not with basis= or resample.")
        if self.basis is not None:
            if self.basis.num_units != self.num_units:
                raise ValueError(f"Site {self.name!r}: basis has {self.basis.num_units} units but "
                                 f"num_units={self.num_units}.")
            if self.unit_axis != -1:
                raise ValueError("A basis acts on the last axis of the activation; use "
                                 "unit_axis=-1 with a basis.")
        if self.apply is not None and self.ablation == "resample":
            raise ValueError(f"Site {self.name!r}: resample ablation needs a cached site "
                             "(it draws another example's activation); use 'zero' or 'mean'.")

    def __repr__(self) -> str:
        # The dataclass repr printed every function's address and the reference array.
        kind = ("cached" if self.cached else "in place" if self.apply is not None
                else "mask-aware")
        axis = "" if self.unit_axis == -1 else f", unit_axis={self.unit_axis}"
        basis = "" if self.basis is None else f", basis {self.basis.name!r}"
        return (f"Site({self.name!r}, d={self.num_units}, {kind}, {self.ablation} ablation"
                f"{axis}{basis})")

    @property
    def identity(self) -> str:
        """What tells this site from another in reports and metric checks: the name, d, the
        ablation and the basis."""
        basis = "" if self.basis is None else f", basis {self.basis.name}"
        return f"{self.name} (d={self.num_units}, {self.ablation} ablation{basis})"

    @property
    def cached(self) -> bool:
        """Whether the computation up to the site runs once per dataset."""
        return self.prefix is not None

    @classmethod
    def mask_aware(cls, name: str, num_units: int, apply_mask: Callable[[Array, Any], Any], *,
                   ablation: Literal["zero", "mean"] = "zero") -> Site:
        """A site whose network takes the mask itself: ``apply_mask(mask [d], inputs) -> outputs``.

        For units spread over several layers (all attention heads of a transformer, say) the
        network applies the mask where each unit lives, with its own ablation values and
        caching (e.g. the residual stream before the first ablated layer in ``inputs``).
        ``ablation`` says which value the network gives an ablated unit ("zero" or "mean"), so
        that reports and :attr:`identity` name it; the network applies it.
        """
        return cls(name=name, num_units=num_units, apply_mask=apply_mask, ablation=ablation)

    @classmethod
    def from_functions(cls, name: str, num_units: int, prefix: Callable[[Any], Array],
                       suffix: Callable[[Array, Any], Any], *, unit_axis: int = -1,
                       ablation: Ablation = "zero", basis: Basis | None = None) -> Site:
        """A cached site from two functions.

        Args:
          name: site name (for reports and errors).
          num_units: d, the number of units (the size of ``unit_axis``, or the basis size).
          prefix: ``inputs -> activation``; must not depend on the mask. Runs once per dataset.
          suffix: ``(activation, inputs) -> outputs``; vmapped over masks.
          unit_axis: the activation axis that holds the units.
          ablation: "zero" (the paper's), "mean" (dataset mean) or "resample" (another example).
          basis: ablate codes of a linear basis instead of neurons.
        """
        return cls(name=name, num_units=num_units, prefix=prefix, suffix=suffix,
                   unit_axis=unit_axis, ablation=ablation, basis=basis)

    @classmethod
    def in_place(cls, name: str, num_units: int, apply: Callable[[Any, Callable], Any], *,
                 ablation: Ablation = "zero", reference: Array | None = None,
                 unit_axis: int = -1, basis: Basis | None = None) -> Site:
        """A site masked inside the network (e.g. at every step of a recurrence).

        Args:
          name: site name.
          num_units: d.
          apply: ``(inputs, ablate) -> outputs``; the network calls ``h = ablate(h)`` on the
            activation wherever the mask applies.
          ablation: "zero" or "mean" ("mean" needs ``reference``).
          reference: ``[K, ..., d]`` activations whose mean is the mean-ablation value.
          unit_axis: axis of the activation that holds the units.
          basis: ablate codes of a linear basis instead of neurons.
        """
        if ablation == "mean" and reference is None:
            raise ValueError(f"Site {name!r}: mean ablation of an in-place site needs "
                             "`reference` activations to take the mean of.")
        return cls(name=name, num_units=num_units, apply=apply, unit_axis=unit_axis,
                   ablation=ablation, basis=basis, reference=reference)


def unit_values(site: Site, act: Array) -> Array:
    """The site's activation expressed in unit space, units on the last axis."""
    if site.basis is not None:
        return site.basis.encode(act)
    return _move_units_last(act, site.unit_axis)


def mean_before(units: Array, lead: int) -> Array:
    """The mean-ablation value of unit-space values (units last): the average over the ``lead``
    axes before the unit axis (examples, positions); axes after it (e.g. the dimensions of one
    attention head) keep their per-unit mean vector."""
    return units.mean(axis=tuple(range(lead)))


def ablation_value(site: Site, act: Array | None, key: Array) -> Array:
    """The value an ablated unit takes, broadcastable against the unit-space activation.

    Args:
      site: the site.
      act: the cached activation (cached sites) or None (in-place sites use ``site.reference``).
      key: PRNG key for resampling (a fixed permutation of the examples).
    """
    if site.ablation == "zero" or site.apply_mask is not None:
        return jnp.zeros((site.num_units,), jnp.float32)
    source = act if act is not None else site.reference
    if source is None:
        raise ValueError(f"Site {site.name!r}: {site.ablation} ablation of an in-place site needs "
                         "`reference` activations; build it with Site.in_place(..., "
                         "reference=...).")
    units = unit_values(site, source)
    if site.ablation == "mean":
        lead = site.unit_axis % source.ndim if site.basis is None else source.ndim - 1
        return mean_before(units, lead)
    # Resample: every example takes the unit values of another example of the same dataset.
    perm = jax.random.permutation(key, units.shape[0])
    return units[perm]


def check_unit_axis(name: str, unit_axis: int, shape: tuple[int, ...]) -> None:
    """Refuses a ``unit_axis`` that does not exist in an activation of ``shape``, or that is
    its example axis (axis 0 of an activation with more than one axis)."""
    if not -len(shape) <= unit_axis < len(shape):
        raise ValueError(f"Site {name!r}: unit_axis={unit_axis} is not an axis of the "
                         f"activation of shape {tuple(shape)}; the units usually lie on the "
                         "last axis, unit_axis=-1.")
    if len(shape) >= 2 and unit_axis % len(shape) == 0:
        raise ValueError(f"Site {name!r}: unit_axis={unit_axis} is the example axis "
                         f"(axis 0) of the activation of shape {tuple(shape)}; the units "
                         "must lie on another axis (usually the last, unit_axis=-1).")


def check_activation(site: Site, act: Array) -> None:
    """Raises a clear error for a wrong unit count or non-finite activations."""
    if site.basis is None:
        check_unit_axis(site.name, site.unit_axis, tuple(act.shape))
    if site.basis is not None:
        site.basis.check_width(tuple(act.shape), f"Site {site.name!r}")
    units = unit_values(site, act)
    if units.shape[-1] != site.num_units:
        raise ValueError(f"Site {site.name!r} declares {site.num_units} units but its activation "
                         f"has {units.shape[-1]} on the unit axis (shape {tuple(act.shape)}, "
                         f"unit_axis={site.unit_axis}).")
    finite = bool(jnp.all(jnp.isfinite(act)))
    if not finite:
        bad = int(jnp.sum(~jnp.isfinite(act)))
        raise ValueError(f"Site {site.name!r}: the cached activation has {bad} NaN/inf values; "
                         "check the network's inputs and weights before ablating.")
