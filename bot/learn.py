"""A softmax classifier over lexical features, trained on the KB's own phrasings when the index is built.

BM25 weighs a word by how rare it is; it cannot learn that "my" tells "what is my name" from "what is your
name", or that a word common to two entries still leans towards one. A linear model trained on the phrasings
(each phrasing an example of its entry) learns per-entry weights for exactly that. To stay fast at thousands of
entries, each phrasing is trained against only the entries the inverted index would offer as candidates for it
(its confusable neighbours), which is also all the model is ever asked to tell apart at query time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Full-batch Adam from zero weights; a fixed, short schedule is the regularizer (with a light L2), so training
# time is predictable. Settings were chosen on the shared dev sets and are not sensitive within 2x.
_EPOCHS = 40
_STEP = 0.2
_L2 = 1e-4
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Sparse per-entry feature weights: a sorted key array (feature * n_classes + entry) and its weights."""

    keys: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    n_classes: int

    def logits(self, features: Sequence[int], values: Sequence[float], classes: Sequence[int]) -> list[float]:
        """Each class's score for one example (its known features and their values)."""
        if not classes:
            return []
        if not features or not len(self.keys):
            return [0.0] * len(classes)
        f = np.asarray(features, dtype=np.int64)
        c = np.asarray(classes, dtype=np.int64)
        wanted = (f[:, None] * self.n_classes + c[None, :]).ravel()
        pos = np.searchsorted(self.keys, wanted)
        pos[pos >= len(self.keys)] = 0
        found = self.keys[pos] == wanted
        w = np.where(found, self.weights[pos], 0.0).reshape(len(f), len(c))
        result: list[float] = (np.asarray(values, dtype=np.float64) @ w).tolist()
        return result


def train(
    rows: Sequence[tuple[Sequence[int], Sequence[float]]],
    gold: Sequence[int],
    negatives: Sequence[Sequence[int]],
    n_classes: int,
) -> LinearModel:
    """Softmax regression: each row (feature ids, values) against its gold class and its negative classes.

    Only (feature, class) pairs that some row pairs up are parameters, so the model stays as sparse as the
    inverted index. Rows without features are skipped.
    """
    keep = [i for i, (f, _) in enumerate(rows) if len(f)]
    if not keep or n_classes < 2:
        return LinearModel(keys=np.zeros(0, np.int64), weights=np.zeros(0), n_classes=n_classes)
    k = 1 + max(len(negatives[i]) for i in keep)
    n = len(keep)
    cand = np.full((n, k), -1, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    fid_parts: list[npt.NDArray[np.int64]] = []
    val_parts: list[npt.NDArray[np.float64]] = []
    for r, i in enumerate(keep):
        negs = [c for c in negatives[i] if c != gold[i]]
        cand[r, 0] = gold[i]
        cand[r, 1 : 1 + len(negs)] = negs
        f, v = rows[i]
        lengths[r] = len(f)
        fid_parts.append(np.asarray(f, dtype=np.int64))
        val_parts.append(np.asarray(v, dtype=np.float64))
    fid = np.concatenate(fid_parts)
    val = np.concatenate(val_parts)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    row_of = np.repeat(np.arange(n), lengths)
    valid = cand >= 0
    pair = fid[:, None] * n_classes + cand[row_of]
    pair_valid = valid[row_of]
    keys, inverse = np.unique(pair[pair_valid], return_inverse=True)
    dummy = len(keys)  # padding slots point at a weight that stays zero
    pidx = np.full(pair.shape, dummy, dtype=np.int64)
    pidx[pair_valid] = inverse.ravel()
    flat = pidx.ravel()
    theta = np.zeros(dummy + 1)
    m = np.zeros_like(theta)
    s = np.zeros_like(theta)
    for t in range(1, _EPOCHS + 1):
        logits = np.add.reduceat(theta[pidx] * val[:, None], starts, axis=0)
        logits[~valid] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[:, 0] -= 1.0
        grad = np.bincount(flat, weights=(p[row_of] * val[:, None]).ravel(), minlength=dummy + 1) / n
        grad += _L2 * theta
        m = _BETA1 * m + (1 - _BETA1) * grad
        s = _BETA2 * s + (1 - _BETA2) * grad * grad
        theta -= _STEP * (m / (1 - _BETA1**t)) / (np.sqrt(s / (1 - _BETA2**t)) + _EPS)
        theta[dummy] = 0.0
    return LinearModel(keys=keys.astype(np.int64), weights=theta[:dummy].copy(), n_classes=n_classes)
