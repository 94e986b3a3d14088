"""Warnings that point at the caller's line, not at a line inside bablate.

``warnings.warn(msg, stacklevel=2)`` names whichever frame is two levels up, which inside a
library is usually another library line (``infer`` calling ``mcmc`` calling the check). A
researcher needs the line of *their* code that asked for the work: :func:`warn_caller` walks
out of the library and attributes the warning to the first frame that is not part of it.

"Part of the library" is every ``bablate`` module except the studies (``bablate.studies.*``
are users of the library, like a notebook or a forked study), plus the frames of the
libraries bablate hands its own functions to and that call them back (jax's tracing,
numpyro's drivers, flax's module machinery, ``contextlib``), so a warning raised while jax
traces a bablate function still lands on the user's line.
"""

from __future__ import annotations

import sys
import warnings

# Module-name prefixes of frames that are never "the caller" (see the module docstring).
_PASS_THROUGH = ("jax", "jaxlib", "numpyro", "flax", "contextlib")


def _is_library(module: str) -> bool:
    if module == "bablate" or module.startswith("bablate."):
        return not module.startswith("bablate.studies.")
    return module.split(".", 1)[0] in _PASS_THROUGH


def warn_caller(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """Issues a warning attributed to the first stack frame outside bablate.

    Args:
      message: the text (or a ``Warning`` instance, whose class is then the category).
      category: the warning class, e.g. ``bablate.inference.posterior.ConvergenceWarning``.
    """
    frame, level = sys._getframe(1), 2  # stacklevel 2 names warn_caller's caller
    while _is_library(frame.f_globals.get("__name__", "")) and frame.f_back is not None:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
