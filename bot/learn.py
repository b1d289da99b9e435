"""A softmax classifier over lexical features, trained on the KB's own phrasings when the index is built.

BM25 weighs a word by how rare it is; it cannot learn that "my" tells "what is my name" from "what is your
name", or that a word common to two entries still leans towards one. A linear model trained on the phrasings
(each phrasing an example of its entry) learns per-entry weights for exactly that. To stay fast at thousands of
entries, each phrasing is trained against only the entries the inverted index would offer as candidates for it
(its confusable neighbours), which is also all the model is ever asked to tell apart at query time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

# Full-batch Adam from the centroids; a fixed, short schedule is the regularizer (with a light L2), so training
# time is predictable. Settings were chosen on the shared dev sets and are not sensitive within 2x.
_EPOCHS = 30
_STEP = 0.2
_L2 = 1e-4  # towards the centroids
_PRIOR = 4.0  # the centroids' scale: a cosine of 1 is a logit of 4
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
# unique_inverse marks keys in a table of up to this many slots per key, and up to this many slots in all
_DENSE_KEYS, _DENSE_TABLE = 64, 2**26


@dataclass(frozen=True, slots=True)
class Rows:
    """Training examples as flat arrays: each row's feature columns and values, one row after another."""

    lengths: npt.NDArray[np.int64]  # how many features each row has
    features: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    @classmethod
    def of(cls, rows: Sequence[tuple[Sequence[int], Sequence[float]]]) -> Rows:
        """From one (features, values) pair per row."""
        return cls(
            lengths=np.asarray([len(f) for f, _ in rows], dtype=np.int64),
            features=np.asarray([x for f, _ in rows for x in f], dtype=np.int64),
            values=np.asarray([x for _, v in rows for x in v], dtype=np.float64),
        )


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


def unique_inverse(values: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``np.unique(values, return_inverse=True)`` for non-negative keys, without np.unique's argsort (a sixth of a
    large KB's build): dense keys are marked in a table, sparse ones sorted packed with their positions (a plain
    sort of int64 is several times faster than an argsort)."""
    n = len(values)
    if not n:
        return values.copy(), np.zeros(0, np.int64)
    top = int(values.max()) + 1
    if top <= min(_DENSE_KEYS * n, _DENSE_TABLE):
        # Mark the keys in a table and number the marked slots, with no sort at all: a byte per possible key is
        # cheaper than a sort's ~100 ns per value (a large KB's keys: a few million of ~14 million possible).
        table = np.zeros(top, dtype=bool)
        table[values] = True
        keys = np.flatnonzero(table)
        rank = np.empty(top, dtype=np.int32 if n < 2**31 else np.int64)  # only the keys' slots are written and read
        rank[keys] = np.arange(len(keys))
        return keys, rank[values].astype(np.int64)
    shift = max(int(n - 1).bit_length(), 1)
    if top.bit_length() + shift > 62:
        keys, inv = np.unique(values, return_inverse=True)
        return keys, inv.ravel()
    packed = np.sort((values << shift) | np.arange(n, dtype=np.int64))
    ordered = packed >> shift
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    inv = np.empty(n, dtype=np.int64)
    inv[packed & ((1 << shift) - 1)] = np.cumsum(first) - 1
    return ordered[first], inv


def train(
    rows: Rows,
    classes: Sequence[int],
    negatives: Mapping[int, Sequence[int]],
    n_classes: int,
) -> LinearModel:
    """Softmax regression, starting from each class's centroid (the mean of its rows, L2-normalized).

    The centroid alone is a fair classifier (a cosine to the entry), and the only one an entry with a single
    phrasing can have. Rows listed in ``negatives`` are then trained against their gold class and those negative
    classes. Only (feature, class) pairs that a centroid or a training row pairs up are parameters, so the model
    stays as sparse as the inverted index.
    """
    lengths = rows.lengths
    if not lengths.sum() or n_classes < 1:
        return LinearModel(keys=np.zeros(0, np.int64), weights=np.zeros(0), n_classes=n_classes)
    fid, val = rows.features, rows.values
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    cls = np.asarray(classes, dtype=np.int64)
    # Centroids.
    per_class = np.bincount(cls, minlength=n_classes).astype(np.float64)
    ckeys, cinv = unique_inverse(fid * n_classes + cls[row_of])
    raw = np.bincount(cinv, weights=val / per_class[cls[row_of]]).astype(np.float64)
    cnorm = np.sqrt(np.bincount(ckeys % n_classes, weights=raw * raw, minlength=n_classes))
    cval: npt.NDArray[np.float64] = raw / cnorm[ckeys % n_classes]
    train_rows = [i for i in negatives if lengths[i]]
    if not train_rows:
        return LinearModel(keys=ckeys, weights=cval * _PRIOR, n_classes=n_classes)
    # Training rows against their candidates (gold first, -1 pads).
    k = 1 + max(len(negatives[i]) for i in train_rows)
    n = len(train_rows)
    cand = np.full((n, k), -1, dtype=np.int64)
    for r, i in enumerate(train_rows):
        negs = [c for c in negatives[i] if c != classes[i]]
        cand[r, 0] = classes[i]
        cand[r, 1 : 1 + len(negs)] = negs
    sel = np.asarray(train_rows, dtype=np.int64)
    tlen = lengths[sel]
    starts = np.concatenate(([0], np.cumsum(tlen)[:-1]))
    take = np.repeat(np.cumsum(lengths)[sel] - tlen - starts, tlen) + np.arange(int(tlen.sum()))
    tfid, tval = fid[take], val[take].astype(np.float32)
    trow = np.repeat(np.arange(n), tlen)
    valid = cand >= 0
    pair = tfid[:, None] * n_classes + cand[trow]
    pair_valid = valid[trow]
    # One sort finds the parameters (the centroids' pairs and the training pairs) and where each pair is.
    keys, inv = unique_inverse(np.concatenate((ckeys, pair[pair_valid])))
    theta = np.zeros(len(keys) + 1)  # the last weight is the padding slots', and stays zero
    theta[inv[: len(ckeys)]] = cval * _PRIOR
    pidx = np.full(pair.shape, len(keys), dtype=np.int64)
    pidx[pair_valid] = inv[len(ckeys) :]
    # Only the parameters that training touches are updated.
    touched = np.zeros(len(keys) + 1, dtype=bool)
    touched[pidx.ravel()] = True
    used = np.flatnonzero(touched)
    local = (np.cumsum(touched) - 1)[pidx]
    w = theta[used].astype(np.float32)
    # A row's logits are a sparse matrix times the weights: one matrix row per (training row, candidate), holding
    # the row's feature values at that candidate's parameters; the gradient is its transpose times the residuals.
    # Built once; an epoch is then two sparse products (it was a gather, a reduceat and a bincount per epoch).
    tokens = len(tval)
    first = starts[trow]
    at = (first * k + (np.arange(tokens) - first))[:, None] + np.arange(k) * tlen[trow][:, None]
    data = np.empty(tokens * k, dtype=np.float32)
    data[at.ravel()] = np.repeat(tval, k)
    cols = np.empty(tokens * k, dtype=np.int32 if len(w) < 2**31 else np.int64)
    cols[at.ravel()] = local.ravel()
    bounds = np.empty(n * k + 1, dtype=np.int64)
    bounds[:-1] = ((starts * k)[:, None] + np.arange(k) * tlen[:, None]).ravel()
    bounds[-1] = tokens * k
    x = sparse.csr_array((data, cols, bounds), shape=(n * k, len(w)))
    xt = x.T  # a CSC view: its product is as fast as a CSR copy's, which took a twentieth of the build to make
    prior = w.copy()
    pad = used == len(keys)
    m = np.zeros_like(w)
    s = np.zeros_like(w)
    for t in range(1, _EPOCHS + 1):
        logits = (x @ w).reshape(n, k)
        logits[~valid] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[:, 0] -= 1.0
        grad = xt @ p.ravel()
        grad /= n
        grad += _L2 * (w - prior)
        m = _BETA1 * m + (1 - _BETA1) * grad
        s = _BETA2 * s + (1 - _BETA2) * grad * grad
        w -= _STEP * (m / (1 - _BETA1**t)) / (np.sqrt(s / (1 - _BETA2**t)) + _EPS)
        w[pad] = 0.0
    theta[used] = w
    return LinearModel(keys=keys, weights=theta[: len(keys)].copy(), n_classes=n_classes)
