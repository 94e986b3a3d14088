"""Unsupervised chunk discovery (UCD) per PA layer, and how its chunks align with the concepts
and their PA templates."""

from __future__ import annotations

import jax
import numpy as np

from bablate.chunks import ucd
from bablate.testbeds.llama import ConceptData, statistic_positions

from .config import Ucd
from .pa import PromptStates


def discovery(uc: Ucd, layers: tuple[int, ...], data: list[ConceptData], prompt: PromptStates,
              key: jax.Array) -> dict:
    """UCD per PA layer (training split states, key ``fold_in(key, layer)``), alignment with
    concept words and templates on the held-out split."""
    valid, owner, test = prompt.valid, prompt.owner, prompt.test
    out = {}
    for li, layer in enumerate(layers):
        s = prompt.states[li]
        fit, held = statistic_positions(valid, test)
        train = s[fit]
        chunks = ucd.discover(train, uc.chunks, jax.random.fold_in(key, layer), steps=uc.steps)
        s_held = s[held]
        last = np.zeros(valid.shape, bool)
        last[:, -1] = True
        per = {}
        for i, d in enumerate(data):
            labels = (last & (owner == i)[:, None])[held]
            al = ucd.alignment(chunks, s_held, labels)
            tpl = prompt.templates[(d.name, layer)]
            direction = tpl.mean - chunks.center
            cos = chunks.directions @ (direction / max(np.linalg.norm(direction), 1e-12))
            al["template_cosine"] = float(cos[al["chunk"]])
            al["template_best_chunk"] = int(np.argmax(cos))
            per[d.name] = al
        out[str(layer)] = {"objective": chunks.objective, "concepts": per}
    return out
