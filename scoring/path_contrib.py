"""Decision-path contributions of a LightGBM model (Saabas / "treeinterpreter"), with numba.

For every tree, the row's path is followed from the root; each split on the way credits its
feature with ``value(child taken) − value(node)``, where a node's value is LightGBM's
``internal_value`` (a leaf's: ``leaf_value``). Per tree these differences telescope to
``leaf − root``, so the contributions plus the bias (the sum of the roots' values) are exactly the
raw score (``Booster.predict(X, raw_score=True)``; for an ``average_output`` random forest that is
the sum over the trees), like ``pred_contrib``'s — but they are not Shapley values: a feature only
gets credit for splits on the path actually taken, and the order of the splits matters.

Cost: one root-to-leaf walk per tree, the same work as scoring the row (~20 µs for 450 trees of
31 leaves), against TreeSHAP's ~2.3 ms (scoring/tree_shap.py; LightGBM's own ~5.5 ms).

The walk must be LightGBM's own, input for input, or the contributions would explain another
score. The kernel replicates ``Tree::NumericalDecision`` / ``Tree::CategoricalDecision``
(``include/LightGBM/tree.h``) and the predictor's input handling:

* the predictor drops every input with |x| ≤ ``kZeroThreshold`` from the row, i.e. scores it as
  0.0 (``scoring.compiled.LIGHTGBM_ZERO_THRESHOLD``);
* numerical split: NaN becomes 0.0 unless the node's missing type is *NaN*; then missing type
  *Zero* sends 0.0 (and so NaN), missing type *NaN* sends NaN, to the default side; everything
  else goes left when ``x <= threshold``;
* categorical split: the value is truncated to ``int`` (-0.5 is category 0); NaN, a negative
  integer and anything outside ``int`` range (which the C++ cast turns into ``INT_MIN``) go right;
  otherwise left exactly when the category is in the node's set (LightGBM's bitset).

Trees: the same ones ``Booster.predict`` uses by default — all of them, or the first
``best_iteration`` when the in-memory booster has one. A registry model is loaded from its text,
which holds exactly the trees the compiled scorer runs (``best_iteration`` is then -1: all).

The arrays are built once per booster (from ``Booster.dump_model()``) and cached while the booster
lives; :func:`prepare` builds them ahead of the first explained row.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from numba import njit

from scoring.compiled import LIGHTGBM_ZERO_THRESHOLD

__all__ = ["PathModel", "num_iteration", "path_contributions", "prepare"]

_NUMERICAL, _CATEGORICAL = 0, 1
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}  # LightGBM's MissingType
_MISSING_ZERO, _MISSING_NAN = 1, 2
_INT_RANGE_END = 2147483648.0  # 2^31: static_cast<int> of x >= this is INT_MIN on x86


@dataclass(frozen=True)
class PathModel:
    """A booster's trees as flat node arrays (leaves are nodes with ``feature == -1``)."""

    num_features: int
    num_trees: int
    num_iteration: int  # what the arrays were built for (see :func:`num_iteration`)
    roots: npt.NDArray[np.int32]
    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float64]
    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int8]  # _NUMERICAL / _CATEGORICAL
    missing: npt.NDArray[np.int8]  # 0 None, 1 Zero, 2 NaN
    default_left: npt.NDArray[np.bool_]
    value: npt.NDArray[np.float64]  # internal_value, or leaf_value for leaves
    count: npt.NDArray[np.float64]  # training rows through the node (internal_/leaf_count)
    cat_start: npt.NDArray[np.int32]  # the node's bitset: cat_bits[cat_start : cat_start+cat_len]
    cat_len: npt.NDArray[np.int32]
    cat_bits: npt.NDArray[np.uint32]
    bias: float  # sum of the roots' values

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> PathModel:
        iterations = num_iteration(booster)
        dump = booster.dump_model(num_iteration=iterations)
        if dump.get("num_tree_per_iteration", 1) != 1:
            raise ValueError("path contributions need a single-output model (binary/regression)")
        trees = [info["tree_structure"] for info in dump["tree_info"]]

        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        kind: list[int] = []
        missing: list[int] = []
        default_left: list[bool] = []
        value: list[float] = []
        count: list[float] = []
        cat_start: list[int] = []
        cat_len: list[int] = []
        cat_bits: list[int] = []
        roots: list[int] = []

        def add(node: dict[str, Any]) -> int:
            index = len(feature)
            leaf = "split_feature" not in node
            if leaf and "leaf_const" in node:
                raise ValueError("linear trees are not supported")
            feature.append(-1 if leaf else int(node["split_feature"]))
            value.append(float(node["leaf_value"] if leaf else node["internal_value"]))
            count.append(float(node.get("leaf_count" if leaf else "internal_count", 0)))
            threshold.append(0.0)
            left.append(-1)
            right.append(-1)
            kind.append(_NUMERICAL)
            missing.append(0)
            default_left.append(False)
            cat_start.append(0)
            cat_len.append(0)
            if leaf:
                return index
            missing[index] = _MISSING[node["missing_type"]]
            default_left[index] = bool(node["default_left"])
            if node["decision_type"] == "==":
                kind[index] = _CATEGORICAL
                categories = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
                words = max(categories, default=-1) // 32 + 1
                bits = [0] * words
                for c in categories:
                    bits[c // 32] |= 1 << (c % 32)
                cat_start[index] = len(cat_bits)
                cat_len[index] = words
                cat_bits.extend(bits)
            elif node["decision_type"] == "<=":
                threshold[index] = float(node["threshold"])
            else:
                raise ValueError(f"unknown decision_type {node['decision_type']!r}")
            return index

        for tree in trees:
            # Iterative pre-order walk: each split's children are added, then linked.
            root = add(tree)
            roots.append(root)
            stack = [(tree, root)]
            while stack:
                node, index = stack.pop()
                if feature[index] < 0:
                    continue
                lo = add(node["left_child"])
                left[index] = lo
                stack.append((node["left_child"], lo))
                hi = add(node["right_child"])
                right[index] = hi
                stack.append((node["right_child"], hi))

        values = np.array(value, dtype=np.float64)
        root_values = values[np.array(roots, dtype=np.intp)]
        return cls(
            num_features=int(dump["max_feature_idx"]) + 1,
            num_trees=booster.num_trees(),
            num_iteration=iterations,
            roots=np.array(roots, dtype=np.int32),
            feature=np.array(feature, dtype=np.int32),
            threshold=np.array(threshold, dtype=np.float64),
            left=np.array(left, dtype=np.int32),
            right=np.array(right, dtype=np.int32),
            kind=np.array(kind, dtype=np.int8),
            missing=np.array(missing, dtype=np.int8),
            default_left=np.array(default_left, dtype=np.bool_),
            value=values,
            count=np.array(count, dtype=np.float64),
            cat_start=np.array(cat_start, dtype=np.int32),
            cat_len=np.array(cat_len, dtype=np.int32),
            cat_bits=np.array(cat_bits, dtype=np.uint32),
            bias=float(root_values.sum()),
        )

    def rows_and_output(
        self, X: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``X`` checked and made contiguous float64, and the zeroed ``(rows, num_features + 1)``
        contributions array a kernel fills (the bias column last)."""
        rows = np.ascontiguousarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.num_features:
            raise ValueError(f"X must be (rows, {self.num_features}), got {rows.shape}")
        return rows, np.zeros((rows.shape[0], self.num_features + 1), dtype=np.float64)

    def contributions(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``(rows, num_features + 1)``: per-feature contributions, bias in the last column."""
        rows, out = self.rows_and_output(X)
        _path_contrib_kernel(
            rows,
            self.roots,
            self.feature,
            self.threshold,
            self.left,
            self.right,
            self.kind,
            self.missing,
            self.default_left,
            self.value,
            self.cat_start,
            self.cat_len,
            self.cat_bits,
            out,
        )
        out[:, -1] = self.bias
        return out


def num_iteration(booster: lgb.Booster) -> int:
    """The iterations ``Booster.predict`` uses by default: ``best_iteration``, else all (-1)."""
    best = getattr(booster, "best_iteration", -1)
    return int(best) if best and best > 0 else -1


_cache: weakref.WeakKeyDictionary[lgb.Booster, PathModel] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def prepare(booster: lgb.Booster) -> PathModel:
    """The booster's node arrays, built on first use and kept while the booster lives."""
    with _cache_lock:
        model = _cache.get(booster)
        if (
            model is not None
            and model.num_trees == booster.num_trees()
            and model.num_iteration == num_iteration(booster)
        ):
            return model
        model = PathModel.from_booster(booster)
        _cache[booster] = model
        return model


def path_contributions(booster: lgb.Booster, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Like ``booster.predict(X, pred_contrib=True)``, with decision-path contributions."""
    return prepare(booster).contributions(X)


# ------------------------------------------------------------------------------------------------
# The kernel
# ------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def goes_left(
    x: float,
    kind: int,
    missing: int,
    default_left: bool,
    threshold: float,
    cat_start: int,
    cat_len: int,
    cat_bits: npt.NDArray[np.uint32],
) -> bool:  # pragma: no cover - compiled
    """Whether LightGBM's predictor sends input ``x`` left at a split with these parameters:
    the one place that replicates its decision (path contributions and TreeSHAP share it)."""
    if abs(x) <= LIGHTGBM_ZERO_THRESHOLD:  # the predictor drops such inputs (NaN stays)
        x = 0.0
    if kind == _CATEGORICAL:
        # static_cast<int>: NaN, ±inf and x >= 2^31 become INT_MIN (negative) on x86.
        if np.isnan(x) or x <= -1.0 or x >= _INT_RANGE_END:
            return False
        category = int(x)  # truncates toward zero: -0.5 is category 0
        word = category >> 5
        return word < cat_len and (cat_bits[cat_start + word] >> (category & 31)) & 1 == 1
    if np.isnan(x) and missing != _MISSING_NAN:
        x = 0.0
    if (missing == _MISSING_ZERO and -LIGHTGBM_ZERO_THRESHOLD <= x <= LIGHTGBM_ZERO_THRESHOLD) or (
        missing == _MISSING_NAN and np.isnan(x)
    ):
        return default_left
    return x <= threshold


@njit(cache=True, nogil=True)
def _path_contrib_kernel(
    X: npt.NDArray[np.float64],
    roots: npt.NDArray[np.int32],
    feature: npt.NDArray[np.int32],
    threshold: npt.NDArray[np.float64],
    left: npt.NDArray[np.int32],
    right: npt.NDArray[np.int32],
    kind: npt.NDArray[np.int8],
    missing: npt.NDArray[np.int8],
    default_left: npt.NDArray[np.bool_],
    value: npt.NDArray[np.float64],
    cat_start: npt.NDArray[np.int32],
    cat_len: npt.NDArray[np.int32],
    cat_bits: npt.NDArray[np.uint32],
    out: npt.NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    for r in range(X.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while feature[node] >= 0:
                f = feature[node]
                if goes_left(
                    X[r, f],
                    kind[node],
                    missing[node],
                    default_left[node],
                    threshold[node],
                    cat_start[node],
                    cat_len[node],
                    cat_bits,
                ):
                    child = left[node]
                else:
                    child = right[node]
                out[r, f] += value[child] - value[node]
                node = child
