"""Population averaging (PA): templates of recurring population states (arXiv 2502.01803).

A concept (a symbol, a chunk, a word) recurs K >= 5 times; its template is the mean state over
those occurrences restricted to the neurons that stay within `tolerance` of that mean in every
occurrence. A new state matches the template when its mean squared error on the template's
neurons is at most the largest such error seen among the training occurrences.

Used by the RNN study (hidden states of a chunk) and the LLM study (residual stream states of a
concept word).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Template:
    """A PA template.

    Attributes:
      mean: [D] mean state over the training occurrences.
      neuron_mask: bool [D], neurons whose every training value is within `tolerance` of the mean.
      threshold: largest training MSE on the masked neurons (detection threshold).
      tolerance: the tolerance used.
    """

    mean: np.ndarray
    neuron_mask: np.ndarray
    threshold: float
    tolerance: float

    @property
    def num_neurons(self) -> int:
        return int(self.neuron_mask.sum())


def pa_template(states_KxD: np.ndarray, tolerance: float) -> Template:
    """Builds a template from K occurrences of a concept.

    Args:
      states_KxD: the states at the K occurrences (K >= 2; the paper uses >= 5).
      tolerance: a neuron is kept when max_k |state_k - mean| <= tolerance.

    Returns:
      The template. Raises ValueError when no neuron is within tolerance.
    """
    s = np.asarray(states_KxD, np.float64)
    if s.ndim != 2 or s.shape[0] < 2:
        raise ValueError(f"pa_template needs states [K >= 2, D], got shape {s.shape}.")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}.")
    mean = s.mean(axis=0)
    mask = np.max(np.abs(s - mean), axis=0) <= tolerance
    if not mask.any():
        spread = float(np.min(np.max(np.abs(s - mean), axis=0)))
        raise ValueError(f"no neuron stays within tolerance {tolerance} of the template mean "
                         f"(smallest spread is {spread:.3g}); raise the tolerance.")
    threshold = float(np.max(np.mean((s[:, mask] - mean[mask]) ** 2, axis=1)))
    return Template(mean=mean, neuron_mask=mask, threshold=threshold, tolerance=float(tolerance))


def pa_scores(template: Template, states_NxD: np.ndarray) -> np.ndarray:
    """Mean squared error to the template on its neurons [N] (lower = closer)."""
    s = np.asarray(states_NxD, np.float64)
    if s.ndim != 2 or s.shape[1] != template.mean.shape[0]:
        raise ValueError(f"states must be [N, {template.mean.shape[0]}], got {s.shape}.")
    m = template.neuron_mask
    return np.mean((s[:, m] - template.mean[m]) ** 2, axis=1)


def pa_detect(template: Template, states_NxD: np.ndarray) -> np.ndarray:
    """bool [N]: the state matches the template (MSE <= threshold)."""
    return pa_scores(template, states_NxD) <= template.threshold


@dataclasses.dataclass(frozen=True)
class ROC:
    """ROC curve of a detector score.

    Attributes:
      fpr, tpr: [n] rates at each threshold (increasing).
      thresholds: [n] score thresholds (a step is positive when score <= threshold for
        lower-is-positive scores).
      auc: area under the curve (probability that a random positive scores as more positive
        than a random negative; ties count one half).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


def detection_rates(detected: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(TPR, FPR) of boolean detections against boolean labels."""
    d, y = np.asarray(detected, bool), np.asarray(labels, bool)
    if d.shape != y.shape:
        raise ValueError(f"detections {d.shape} and labels {y.shape} differ in shape.")
    if y.all() or not y.any():
        raise ValueError("labels need both positives and negatives for TPR/FPR.")
    return float(d[y].mean()), float(d[~y].mean())


def tpr_fpr_auc(scores: np.ndarray, labels: np.ndarray, lower_is_positive: bool = True) -> ROC:
    """ROC curve and AUC of a score against boolean labels.

    Args:
      scores: [N] detector scores; by default lower = more likely positive (PA's MSE).
      labels: bool [N] ground truth (True = the concept is present).
      lower_is_positive: set False for scores where higher means positive.

    Returns:
      `ROC` with the curve over all distinct thresholds and the AUC (Mann–Whitney, with ties).
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be equal 1-D shapes.")
    if y.all() or not y.any():
        raise ValueError("labels need both positives and negatives for an ROC curve.")
    pos_score = -s if lower_is_positive else s
    thresholds = np.unique(pos_score)[::-1]  # most positive first
    tpr = np.asarray([np.mean(pos_score[y] >= t) for t in thresholds])
    fpr = np.asarray([np.mean(pos_score[~y] >= t) for t in thresholds])
    # AUC via ranks (average ranks for ties) = Mann–Whitney U / (n_pos n_neg).
    order = np.argsort(pos_score, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = pos_score[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    fpr = np.concatenate([[0.0], fpr])
    tpr = np.concatenate([[0.0], tpr])
    thr = -thresholds if lower_is_positive else thresholds
    thr = np.concatenate([[-np.inf if lower_is_positive else np.inf], thr])
    return ROC(fpr=fpr, tpr=tpr, thresholds=thr, auc=float(auc))


def bootstrap_auc(scores_KxN: np.ndarray, labels_N: np.ndarray, rng: np.random.Generator,
                  num: int = 2000, lower_is_positive: bool = True) -> np.ndarray:
    """AUCs of K scores of the same N items on ``num`` bootstrap resamples of the items.

    Each resample draws the positives and the negatives with replacement, each set to its own
    size (so every resample has both), and the same resample scores all K detectors: the
    spread of a difference of their AUCs is then paired. Resample b draws positive indices
    ``rng.integers(0, P, P)`` and then negative indices ``rng.integers(0, M, M)`` (positives
    and negatives in their order among the items), b = 0, 1, ...; its AUC equals
    `tpr_fpr_auc` on the resampled items (Mann–Whitney, ties count one half).

    Args:
      scores_KxN: K detector scores per item (lower = more positive, unless
        ``lower_is_positive`` is False).
      labels_N: bool, the item is a positive.
      rng: draws the resamples.
      num: number of resamples.

    Returns:
      [num, K] AUCs.
    """
    s = np.asarray(scores_KxN, np.float64)
    y = np.asarray(labels_N, bool)
    if s.ndim != 2 or y.shape != (s.shape[1],):
        raise ValueError(f"scores must be [K, N] with one label per item; got {s.shape}, "
                         f"{y.shape}.")
    if y.all() or not y.any():
        raise ValueError("labels need both positives and negatives for an AUC.")
    s = -s if lower_is_positive else s  # higher = more positive from here on
    pos, neg = s[:, y], s[:, ~y]
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    counts_pos, counts_neg = np.empty((num, n_pos)), np.empty((num, n_neg))
    for b in range(num):
        counts_pos[b] = np.bincount(rng.integers(0, n_pos, n_pos), minlength=n_pos)
        counts_neg[b] = np.bincount(rng.integers(0, n_neg, n_neg), minlength=n_neg)
    out = np.empty((num, s.shape[0]))
    for k in range(s.shape[0]):
        order = np.argsort(neg[k], kind="mergesort")
        sorted_neg = neg[k, order]
        # cum[b, j]: resampled count of the j lowest-scoring negatives.
        cum = np.concatenate([np.zeros((num, 1)), np.cumsum(counts_neg[:, order], axis=1)],
                             axis=1)
        below = np.searchsorted(sorted_neg, pos[k], side="left")
        upto = np.searchsorted(sorted_neg, pos[k], side="right")
        beaten = cum[:, below] + 0.5 * (cum[:, upto] - cum[:, below])  # [num, P]
        out[:, k] = np.sum(counts_pos * beaten, axis=1) / (n_pos * n_neg)
    return out


# The authors' tolerance sweep (absolute units of the layer's activations), largest first.
AUTHORS_TOLERANCES = (100.0, 30.0, 20.0, 10.0, 3.0) + tuple(0.8**i for i in range(35))


@dataclasses.dataclass(frozen=True)
class SweepPA:
    """A PA template chosen as the chunk paper's authors choose it, with its sweep.

    Attributes:
      template: the template at the chosen tolerance (None when no tolerance kept a neuron).
      tolerance: the chosen tolerance (best training accuracy; the first of equals).
      tolerances, tpr, fpr, accuracy, num_neurons: the sweep on the training sequence.
      auc: area under the sweep's (FPR, TPR) points, sorted by FPR with (1, 1) appended, by the
        trapezoid rule: the authors' "AUC", a curve over tolerances, not over a score threshold.
      occurrences: indices of the K training occurrences.
    """

    template: Template | None
    tolerance: float
    tolerances: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    accuracy: np.ndarray
    num_neurons: np.ndarray
    auc: float
    occurrences: np.ndarray


def sweep_template(states_NxD: np.ndarray, labels_N: np.ndarray, k: int,
                   rng: np.random.Generator,
                   tolerances: tuple[float, ...] = AUTHORS_TOLERANCES) -> SweepPA:
    """PA as the authors build it on one training sequence.

    K random occurrences of the concept form the template at each tolerance (a neuron is kept
    when every occurrence is strictly within the tolerance of their mean; the detection
    threshold is the largest training-occurrence MSE); every position of the sequence is then
    detected or not, giving TPR, FPR and accuracy; the tolerance with the best accuracy is kept.
    A tolerance that keeps no neuron detects nothing. The authors draw new occurrences for each
    tolerance; here one draw serves the whole sweep (so tolerance is the only thing varied).

    Args:
      states_NxD: states at every position of the training sequence.
      labels_N: bool, the position is an occurrence of the concept.
      k: number of training occurrences (the authors: 5).
      rng: draws the occurrences.
      tolerances: the sweep.
    """
    s, y = np.asarray(states_NxD, np.float64), np.asarray(labels_N, bool)
    if s.ndim != 2 or y.shape != (s.shape[0],):
        raise ValueError(f"states must be [N, D] with one label per row; got {s.shape}, "
                         f"{y.shape}.")
    if y.sum() < k or k < 2:
        raise ValueError(f"need at least k = {k} >= 2 occurrences; the sequence has "
                         f"{int(y.sum())}. Use a longer text or a smaller k.")
    if y.all():
        raise ValueError("every position is an occurrence; the sequence needs other tokens.")
    occ = np.sort(rng.choice(np.flatnonzero(y), k, replace=False))
    train = s[occ]
    mean = train.mean(axis=0)
    spread = np.max(np.abs(train - mean), axis=0)
    tpr, fpr, acc, nn = [], [], [], []
    templates: list[Template | None] = []
    for tol in tolerances:
        mask = spread < tol
        if not mask.any():
            detected = np.zeros(len(y), bool)
            templates.append(None)
        else:
            thr = float(np.max(np.mean((train[:, mask] - mean[mask]) ** 2, axis=1)))
            tpl = Template(mean=mean, neuron_mask=mask, threshold=thr, tolerance=float(tol))
            detected = pa_detect(tpl, s)
            templates.append(tpl)
        tpr.append(float(detected[y].mean()))
        fpr.append(float(detected[~y].mean()))
        acc.append(float(np.mean(detected == y)))
        nn.append(int(mask.sum()))
    best = int(np.argmax(acc))
    pts = sorted(zip(fpr, tpr, strict=True)) + [(1.0, 1.0)]
    x, h = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    auc = float(np.sum((x[1:] - x[:-1]) * (h[1:] + h[:-1]) / 2.0))
    return SweepPA(template=templates[best], tolerance=float(tolerances[best]),
                   tolerances=np.asarray(tolerances, float), tpr=np.asarray(tpr),
                   fpr=np.asarray(fpr), accuracy=np.asarray(acc), num_neurons=np.asarray(nn),
                   auc=auc, occurrences=occ)
