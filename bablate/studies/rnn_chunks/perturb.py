"""Steps 3-4: perturbation (inject a DSC chunk state, feed a symbol, read the prediction) and
grafting (transfer training on 'ABCDLMN' with the 'J' state written after 'C')."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bablate import chunks
from bablate.models import rnn
from bablate.studies.rnn_chunks import intervals
from bablate.studies.rnn_chunks.config import StudyConfig
from bablate.studies.rnn_chunks.training import EVAL_WINDOWS
from bablate.testbeds import rnn as rnn_testbed
from bablate.testbeds import sequences


def state_for_symbol(res: chunks.DSCResult, h_fit: np.ndarray, symbol: int) -> np.ndarray | None:
    """Hidden vector of the most frequent DSC state decoded as `symbol` (None if there is none)."""
    codes = res.discretizer.codes(h_fit)
    ids, states = chunks.state_ids(codes)
    counts = np.bincount(ids, minlength=len(states))
    for sid in np.argsort(-counts, kind="stable"):
        if res.lookup.table.get(states[sid]) == symbol:
            return res.discretizer.vector(np.asarray(states[sid]))
    return None


def perturbation(model: rnn.RNNConfig, variables: dict, res: chunks.DSCResult,
                 h_fit: np.ndarray, seq: sequences.ChunkedSequence) -> list[dict]:
    """Inject the state decoded as a, feed b; predicted vs expected c for every a b c in a word.
    Control: the state decoded as the filler."""
    alpha = seq.alphabet
    control = state_for_symbol(res, h_fit, alpha.index(sequences.FILLER))
    run = jax.jit(lambda h0, x: rnn.unroll(model, variables, x, h0=h0)[0][0])
    out, seen = [], set()
    for word in seq.words:
        for a, b, c in zip(word, word[1:], word[2:], strict=False):
            if (a, b) in seen:
                continue
            seen.add((a, b))
            inj = state_for_symbol(res, h_fit, alpha.index(a))
            if inj is None or control is None:
                continue
            x = jnp.asarray([alpha.index(b)], jnp.int32)
            lp_inj = np.asarray(run(jnp.asarray(inj, jnp.float32), x))
            lp_ctl = np.asarray(run(jnp.asarray(control, jnp.float32), x))
            out.append({"inject": a, "feed": b, "expect": c,
                        "pred_injected": alpha[int(lp_inj.argmax())],
                        "p_expect_injected": float(np.exp(lp_inj[alpha.index(c)])),
                        "pred_control": alpha[int(lp_ctl.argmax())],
                        "p_expect_control": float(np.exp(lp_ctl[alpha.index(c)]))})
    return out


def perturbation_results(pert: list[dict]) -> dict:
    """results.json's perturbation keys: the cases and, when there are any, the share of them
    in which the injected (control) state gives the expected symbol."""
    out: dict[str, Any] = {"perturbation": pert}
    if pert:
        out["perturbation_success"] = float(np.mean(
            [p["pred_injected"] == p["expect"] for p in pert]))
        out["perturbation_control_success"] = float(np.mean(
            [p["pred_control"] == p["expect"] for p in pert]))
    return out


def grafting(cfg: StudyConfig, variables: dict, res: chunks.DSCResult, h_fit: np.ndarray,
             transfer_keys: dict[int, jax.Array]) -> dict:
    """Transfer training on 'ABCDLMN' with and without grafting the 'J' state after 'C', one
    run pair per seed s of ``transfer_keys`` (both runs of a pair share the key: the same
    batches, so the curves differ by the graft alone)."""
    alpha = sequences.COMPOSITIONAL_ALPHABET
    j_found = state_for_symbol(res, h_fit, alpha.index("J"))
    if j_found is None:
        return {}
    j_state = jnp.asarray(j_found, jnp.float32)
    c_id = alpha.index("C")  # 'C' occurs only inside 'ABCDLMN' in the transfer sequence

    def graft(window):
        return jnp.broadcast_to(j_state, window.shape + j_state.shape), window == c_id

    g = cfg.grafting
    # Transfer training keeps our window and batch whichever recipe trained the network.
    tc = dataclasses.replace(cfg.train.of("bablate"), steps=g.steps, eval_every=g.eval_every,
                             chunk=g.chunk)
    curves: dict[str, list] = {"none": [], "graft": [], "graft_eval_grafted": []}
    steps = None
    for s, key in transfer_keys.items():
        train_seq = sequences.transfer(s)
        test = rnn_testbed.to_windows(sequences.transfer(s + rnn_testbed.TEST_SEED_OFFSET),
                                      cfg.train.window)
        # The one new transition: 'L' after 'ABCD' ('LMN' continues as in 'JKLMN').
        mask = (test.chunk_pos[:EVAL_WINDOWS, 1:] == 4).astype(np.float32)
        for name, gr in (("none", None), ("graft", graft)):
            _, hist = rnn.train(cfg.model, tc, train_seq.tokens, key, variables=variables,
                                eval_windows=test.tokens[:EVAL_WINDOWS], eval_mask=mask,
                                graft=gr, eval_graft=gr is not None,
                                desc=f"transfer {name} seed {s}")
            curves[name].append(hist["accuracy"])
            if gr is not None:
                curves["graft_eval_grafted"].append(hist["accuracy_grafted"])
            steps = hist["step"]
    summary = {name: intervals.mean_ci(np.asarray(c)) for name, c in curves.items()}
    return {"step": steps, "curves": {k: np.asarray(v).tolist() for k, v in curves.items()},
            "summary": summary}

