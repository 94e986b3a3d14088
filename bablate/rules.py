"""Correctness rules for tasks (re-exported from :mod:`bablate.tasks`)."""

from bablate.tasks import Rule, binary, custom, p_correct_from, smooth_top1, top1

__all__ = ["Rule", "binary", "custom", "p_correct_from", "smooth_top1", "top1"]
