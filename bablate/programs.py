"""Compiled programs (MCMC loop, SVI step, exact scorers, the masked evaluator behind
``Task.log_odds`` / ``p_correct``): their cache and their arguments.

A program is compiled for what it depends on beyond arrays (the site object, the rule's code
and the run's static settings) and takes everything else as an argument
(:func:`bablate.amd.amd_args`: the task's data, the rule's positives, the log prior and β), so
every task on one site with data of one shape reuses one compilation.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Protocol

from bablate.rules import Rule
from bablate.sites import Site

_CACHE_SIZE = 32
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_LOCK = threading.Lock()


def _function_key(fn):
    """A function by its code and captured values, so that rules rebuilt by one factory
    (``bb.rules.top1(y)`` per task) share a compilation; by identity when a captured value is
    not hashable (arrays), which is always safe."""
    if fn is None or not hasattr(fn, "__code__"):
        return fn
    cells = tuple(c.cell_contents for c in fn.__closure__ or ())
    key = (fn.__code__, cells, fn.__defaults__,
           tuple(sorted((fn.__kwdefaults__ or {}).items())))
    try:
        hash(key)
    except TypeError:
        return fn
    return key


class Keyed(Protocol):
    """What :func:`program_key` reads of a task (a :class:`bablate.Task`)."""

    @property
    def site(self) -> Site: ...

    @property
    def rule(self) -> Rule: ...


def program_key(task: Keyed) -> tuple:
    """What a compiled program of ``task`` depends on beyond its arrays: the site object and
    the rule's code (see :func:`_function_key`); ``rule.positive`` is an argument."""
    rule = task.rule
    return (task.site, _function_key(rule.hard), _function_key(rule.soft),
            rule.positive is None)


def cached_program(key: tuple, build: Callable[[], Any]) -> Any:
    """``build()``'s result, kept in a small LRU cache under ``key``."""
    with _LOCK:
        if key in _PROGRAMS:
            _PROGRAMS.move_to_end(key)
            return _PROGRAMS[key]
    program = build()
    with _LOCK:
        _PROGRAMS[key] = program
        while len(_PROGRAMS) > _CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    return program


def trace_guard(fn: Callable) -> Callable:
    """Identity; tests replace it with ``chex.assert_max_traces`` to catch retracing."""
    return fn


def clear_cache() -> None:
    """Forgets the compiled programs (sampling loops, SVI steps, exact scorers, evaluators)."""
    with _LOCK:
        _PROGRAMS.clear()
