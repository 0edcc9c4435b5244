"""Compiled LightGBM scorer: treelite loads the booster, tl2cgen writes C, gcc builds a library.

The first rule, tested in ``tests/test_compiled_oracle.py``: **the compiled model gives LightGBM's
own probabilities** (``lightgbm.Booster.predict``) — |Δ| ≤ 1e-6 is the contract, and in practice the
results are bit-identical because thresholds and leaves stay float64 and trees are summed in
LightGBM's order.

Pipeline (:func:`compile_model`)::

    model.txt ──▶ inspect + normalise ──▶ treelite.Model ──▶ tl2cgen.generate_c_code
        ──▶ rewrite pass (exactness + speed) ──▶ + fs_driver.c ──▶ gcc -O3 ──▶ model.so

Four places where treelite/tl2cgen and LightGBM disagree, and what this module does about them:

* LightGBM's predictor drops every input with |x| ≤ 1e-35 (its ``kZeroThreshold``) from the row,
  i.e. scores it as 0.0; trees do have thresholds at ±1e-35, so -1e-35 lands on the other side
  in treelite. Inputs are snapped to 0.0 the same way before scoring.
* ``zero_as_missing`` (LightGBM missing type *Zero*): LightGBM sends 0, |x| ≤ 1e-35 and NaN to the
  node's default side; treelite treats the node as if NaN meant 0. We rewrite those nodes to
  missing type *NaN* (same default side) for treelite and map zero-ish inputs of those features to
  NaN before scoring. Together that is exactly LightGBM's rule.
* Categorical splits: LightGBM truncates the value to ``int`` (so -0.5 is category 0); tl2cgen says
  "negative ⇒ not in any category". Inputs in (-1, 0) of categorical features become 0.0.
* tl2cgen's ``union Entry`` flags a missing value by writing ``-1`` into the low 32 bits of the
  double, so a finite double whose low word happens to be 0xFFFFFFFF reads as missing. The rewrite
  pass tests ``isnan(fvalue)`` instead, which also lets a float64 row be used as-is.

The rewrite pass also folds ``!missing || x <= t`` into one unordered compare (``!(x > t)``), makes
small subtrees branch-free (table lookup indexed by the comparisons), and the driver evaluates
trees unit by unit over blocks of rows so the code of one unit stays in the instruction cache.
None of that changes the arithmetic: every tree still adds exactly one leaf, in LightGBM's order.
What each step is worth is measured by ``benchmarks/model_inference.py``.

Scoring calls the driver's own entry points (``fs_score_many_f64/_f32``, ``fs_score_one_f64``)
through numba intrinsics that take the C function's address as an argument, so nothing is
compiled per model, a single-row call costs ~0.1 µs of dispatch, and batch calls release the GIL.

Loading (:meth:`CompiledModel.load`) reads the library once, checks its SHA-256 and only then
hands those same bytes to the dynamic loader (no window between check and use). When the library
cannot be used, treelite GTIL scores the same normalised model (``engine == "gtil"``).

Debug switch: ``FRAUD_DUMP_C=DIR`` keeps the generated C sources of every build in ``DIR``.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import hashlib
import hmac
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic, overload

log = logging.getLogger(__name__)

__all__ = [
    "FEATURE_CATEGORICAL",
    "FEATURE_NUMERIC",
    "FEATURE_ZERO_AS_MISSING",
    "BuildInfo",
    "CompiledModel",
    "LightGBMModelInfo",
    "ModelCompileError",
    "ModelIntegrityError",
    "compile_model",
    "file_sha256",
    "inspect_lightgbm_model",
    "treelite_model_text",
]

#: Version of the entry points the driver exports (``fs_*``); a library with another number is
#: not used. Bump it whenever the driver's C signatures change.
DRIVER_ABI = 1

FEATURE_NUMERIC = 0
FEATURE_CATEGORICAL = 1
FEATURE_ZERO_AS_MISSING = 2

# LightGBM's kZeroThreshold is declared ``const double kZeroThreshold = 1e-35f``: a float literal,
# so the bound is float32(1e-35) widened to double, not 1e-35.
LIGHTGBM_ZERO_THRESHOLD = float(np.float32(1e-35))

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)


class ModelIntegrityError(Exception):
    """A model artifact is not the one the manifest describes (digest, feature count or ABI)."""


class ModelCompileError(RuntimeError):
    """The model could not be turned into a native library (unsupported model, compiler error)."""


# --------------------------------------------------------------------------------------------
# LightGBM model text: what it contains, and the treelite-compatible form of it
# --------------------------------------------------------------------------------------------

# decision_type bit layout, from LightGBM's tree.h.
_DT_CATEGORICAL = 1
_DT_MISSING_SHIFT = 2
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2

_HEADER_FIELD = re.compile(r"^(\w+)=(.*)$", re.M)
_SPLIT_FEATURE = re.compile(r"^split_feature=(.*)$", re.M)
_DECISION_TYPE = re.compile(r"^decision_type=(.*)$", re.M)


@dataclass(frozen=True)
class LightGBMModelInfo:
    """What scoring needs to know about a LightGBM model text, before treelite sees it."""

    num_features: int
    num_trees: int
    objective: str
    feature_names: tuple[str, ...]
    #: One of FEATURE_NUMERIC / FEATURE_CATEGORICAL / FEATURE_ZERO_AS_MISSING per feature.
    feature_kinds: tuple[int, ...]

    @property
    def needs_input_fixups(self) -> bool:
        return any(k != FEATURE_NUMERIC for k in self.feature_kinds)


def inspect_lightgbm_model(text: str) -> LightGBMModelInfo:
    """Read the header and split types of a LightGBM model text; refuse what we cannot score.

    Raises :class:`ModelCompileError` for models that are not a single-output binary classifier
    (the score is a probability of fraud) or that use linear trees (treelite cannot load them).
    """
    header_text = text.split("\nTree=", 1)[0]
    header = dict(_HEADER_FIELD.findall(header_text))
    if "max_feature_idx" not in header:
        raise ModelCompileError("not a LightGBM model text (no max_feature_idx)")
    num_features = int(header["max_feature_idx"]) + 1
    objective = header.get("objective", "")
    objective_name = objective.split(" ", 1)[0]
    if (
        int(header.get("num_class", "1")) != 1
        or int(header.get("num_tree_per_iteration", "1")) != 1
    ):
        raise ModelCompileError(f"need a single-output model, got objective {objective!r}")
    if objective_name not in {"binary", "cross_entropy", "xentropy"}:
        raise ModelCompileError(
            f"need a binary classifier (probability of fraud), got objective {objective!r}"
        )
    if re.search(r"^is_linear=1$", text, re.M):
        raise ModelCompileError("LightGBM linear trees (linear_tree=True) are not supported")
    names = tuple(header.get("feature_names", "").split())
    if len(names) != num_features:
        names = tuple(f"Column_{i}" for i in range(num_features))

    missing_types: list[set[int]] = [set() for _ in range(num_features)]
    categorical = [False] * num_features
    split_rows = _SPLIT_FEATURE.findall(text)
    type_rows = _DECISION_TYPE.findall(text)
    if len(split_rows) != len(type_rows):
        raise ModelCompileError("malformed model text: split_feature/decision_type mismatch")
    for features, decisions in zip(split_rows, type_rows, strict=True):
        for f, d in zip(features.split(), decisions.split(), strict=True):
            fi, di = int(f), int(d)
            if di & _DT_CATEGORICAL:
                categorical[fi] = True
            else:
                missing_types[fi].add((di >> _DT_MISSING_SHIFT) & 3)
    kinds: list[int] = []
    for fi in range(num_features):
        zero = _MISSING_ZERO in missing_types[fi]
        if zero and len(missing_types[fi]) > 1:
            # LightGBM fixes the missing type per feature (its bin mapper); a mix would need
            # per-node input rules, which one input fix-up per feature cannot express.
            raise ModelCompileError(f"feature {fi} mixes missing types {missing_types[fi]}")
        if categorical[fi] and zero:
            raise ModelCompileError(f"feature {fi} has categorical and zero-as-missing splits")
        if categorical[fi]:
            kinds.append(FEATURE_CATEGORICAL)
        elif zero:
            kinds.append(FEATURE_ZERO_AS_MISSING)
        else:
            kinds.append(FEATURE_NUMERIC)
    num_trees = len(re.findall(r"^Tree=\d+$", text, re.M))
    return LightGBMModelInfo(
        num_features=num_features,
        num_trees=num_trees,
        objective=objective,
        feature_names=names,
        feature_kinds=tuple(kinds),
    )


def treelite_model_text(text: str) -> str:
    """The model text treelite should load so that it scores like LightGBM.

    Numerical nodes of missing type *Zero* become missing type *NaN* with the same default side;
    :func:`prepare_rows` (and the C driver) turn zero-ish inputs of those features into NaN. The
    ``tree_sizes`` header goes because it would no longer match the rewritten trees.
    """

    def to_nan_missing(match: re.Match[str]) -> str:
        out = []
        for d in map(int, match.group(1).split()):
            if not d & _DT_CATEGORICAL and (d >> _DT_MISSING_SHIFT) & 3 == _MISSING_ZERO:
                d = (d & ~(3 << _DT_MISSING_SHIFT)) | (_MISSING_NAN << _DT_MISSING_SHIFT)
            out.append(str(d))
        return "decision_type=" + " ".join(out)

    text = _DECISION_TYPE.sub(to_nan_missing, text)
    return re.sub(r"^tree_sizes=.*\n", "", text, count=1, flags=re.M)


def prepare_rows(X: npt.NDArray[Any], feature_kinds: Sequence[int]) -> npt.NDArray[np.float64]:
    """Apply LightGBM's input rules that treelite lacks (see the module docstring); returns float64.

    The C driver does the same per row; GTIL and the tests use this.
    """
    out = np.array(X, dtype=np.float64, copy=True, order="C")
    out[np.abs(out) <= LIGHTGBM_ZERO_THRESHOLD] = 0.0
    for j, kind in enumerate(feature_kinds):
        if kind == FEATURE_CATEGORICAL:
            col = out[:, j]
            col[(col > -1.0) & (col < 0.0)] = 0.0
        elif kind == FEATURE_ZERO_AS_MISSING:
            col = out[:, j]
            col[np.abs(col) <= LIGHTGBM_ZERO_THRESHOLD] = np.nan
    return out


def load_treelite_model(model_path: str | Path) -> tuple[Any, LightGBMModelInfo]:
    """Load a LightGBM model file into treelite, normalised to LightGBM's scoring rules."""
    import treelite  # deferred: importing treelite costs ~0.3 s and services may not need it

    text = Path(model_path).read_text()
    info = inspect_lightgbm_model(text)
    with tempfile.TemporaryDirectory(prefix="fraud-tl-") as tmp:
        normalised = Path(tmp) / "model.txt"
        normalised.write_text(treelite_model_text(text))
        model = treelite.frontend.load_lightgbm_model(normalised)
    header = model.get_header_accessor()
    postprocessor = header.get_field("postprocessor")
    if postprocessor != "sigmoid":
        raise ModelCompileError(f"expected a sigmoid output, treelite says {postprocessor!r}")
    if model.num_feature != info.num_features:
        raise ModelCompileError(
            f"treelite sees {model.num_feature} features, the model text {info.num_features}"
        )
    return model, info


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Rewrite pass over tl2cgen's generated C
# --------------------------------------------------------------------------------------------

_NEGATED_OP = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}
# "missing goes left":  !(data[k].missing != -1) || (data[k].fvalue <= (double)t)
_DEFAULT_LEFT = re.compile(
    r"^!\(data\[(\d+)\]\.missing != -1\) \|\| "
    r"\(data\[\1\]\.fvalue (<=|<|>=|>) (\(double\)[^()]+)\)$"
)
# "missing goes right":  (data[k].missing != -1) && (data[k].fvalue <= (double)t)
_DEFAULT_RIGHT = re.compile(
    r"^\(data\[(\d+)\]\.missing != -1\) && \(data\[\1\]\.fvalue (<=|<|>=|>) (\(double\)[^()]+)\)$"
)
_MISSING_FLAG = re.compile(r"data\[(\d+)\]\.missing != -1")
_SIMPLE_COND = re.compile(r"^!?\(data\[\d+\]\.fvalue (?:<=|<|>=|>) \(double\)[^()]+\)$")
_IF_LINE = re.compile(r"^if \( (LIKELY|UNLIKELY)\( (.*) \) \) \{$")
_LEAF_LINE = re.compile(r"^result\[0\] \+= ([^;]+);$")
_UNIT_HEADER = re.compile(r"^void (predict_unit\d+)\(union Entry\* data, double\* result\) \{$")


class _RewriteError(Exception):
    """tl2cgen's output did not look as expected; the caller keeps the unrewritten code."""


def _fold_condition(cond: str) -> str:
    """One unordered compare instead of ``missing-flag || compare`` (same truth table with NaN).

    ``!(x > t)`` is true for NaN and for x ≤ t — exactly "missing goes left, else x ≤ t";
    ``x <= t`` is false for NaN — "missing goes right". Anything else only swaps the flag test
    for ``isnan``.
    """
    cond = cond.strip()
    if m := _DEFAULT_LEFT.match(cond):
        return f"!(data[{m[1]}].fvalue {_NEGATED_OP[m[2]]} {m[3]})"
    if m := _DEFAULT_RIGHT.match(cond):
        return f"(data[{m[1]}].fvalue {m[2]} {m[3]})"
    return _MISSING_FLAG.sub(r"!isnan(data[\1].fvalue)", cond)


@dataclass
class _Leaf:
    value: str


@dataclass
class _Split:
    hint: str
    cond: str
    left: _Leaf | _Split
    right: _Leaf | _Split


_Node = _Leaf | _Split


def _parse_statement(lines: list[str], i: int) -> tuple[_Node, int]:
    line = lines[i]
    if m := _LEAF_LINE.match(line):
        return _Leaf(m[1]), i + 1
    if m := _IF_LINE.match(line):
        left, i = _parse_statement(lines, i + 1)
        if lines[i] != "} else {":
            raise _RewriteError(f"expected '}} else {{', got {lines[i]!r}")
        right, i = _parse_statement(lines, i + 1)
        if lines[i] != "}":
            raise _RewriteError(f"expected '}}', got {lines[i]!r}")
        return _Split(m[1], _fold_condition(m[2]), left, right), i + 1
    raise _RewriteError(f"unexpected line {line!r}")


def _count_splits(node: _Node) -> int:
    if isinstance(node, _Leaf):
        return 0
    return 1 + _count_splits(node.left) + _count_splits(node.right)


def _all_simple(node: _Node) -> bool:
    if isinstance(node, _Leaf):
        return True
    return (
        bool(_SIMPLE_COND.match(node.cond)) and _all_simple(node.left) and _all_simple(node.right)
    )


@dataclass
class _RewriteStats:
    splits: int = 0
    branch_free_subtrees: int = 0
    branch_free_splits: int = 0


def _emit(node: _Node, out: list[str], indent: str, max_splits: int, stats: _RewriteStats) -> None:
    if isinstance(node, _Leaf):
        out.append(f"{indent}acc += {node.value};")
        return
    n_splits = _count_splits(node)
    if n_splits <= max_splits and _all_simple(node):
        # Small subtree near the leaves: its branches are the unpredictable ones, so evaluate
        # every comparison (cheap, independent loads) and pick the leaf from a table. The table
        # holds the same literals tl2cgen wrote, so the sum is unchanged.
        leaves: list[str] = []
        conds: list[str] = []

        def index_expr(n: _Node) -> str:
            if isinstance(n, _Leaf):
                leaves.append(n.value)
                return str(len(leaves) - 1)
            conds.append(n.cond)
            c = f"c{len(conds) - 1}"
            return f"FS_SELECT({c}, {index_expr(n.left)}, {index_expr(n.right)})"

        expr = index_expr(node)
        out.append(f"{indent}{{")
        out.append(f"{indent}  static const double lv[{len(leaves)}] = {{{', '.join(leaves)}}};")
        out.extend(f"{indent}  const int c{k} = {c};" for k, c in enumerate(conds))
        out.append(f"{indent}  acc += lv[{expr}];")
        out.append(f"{indent}}}")
        stats.branch_free_subtrees += 1
        stats.branch_free_splits += n_splits
        return
    out.append(f"{indent}if ( {node.hint}( {node.cond} ) ) {{")
    _emit(node.left, out, indent + "  ", max_splits, stats)
    out.append(f"{indent}}} else {{")
    _emit(node.right, out, indent + "  ", max_splits, stats)
    out.append(f"{indent}}}")


def _rewrite_unit_source(source: str, *, branch_free_max_splits: int) -> tuple[str, _RewriteStats]:
    """Rewrite one ``tuN.c`` of tl2cgen (one ``predict_unitN`` function holding whole trees)."""
    lines = source.split("\n")
    starts = [i for i, line in enumerate(lines) if _UNIT_HEADER.match(line)]
    if len(starts) != 1:
        raise _RewriteError("expected exactly one predict_unit function per source file")
    start = starts[0]
    try:
        end = lines.index("}", start + 1)
    except ValueError:
        raise _RewriteError("unterminated predict_unit function") from None
    body = [line.strip() for line in lines[start + 1 : end]]
    body = [line for line in body if line and line != "unsigned int tmp;"]
    stats = _RewriteStats()
    trees: list[_Node] = []
    i = 0
    while i < len(body):
        tree, i = _parse_statement(body, i)
        trees.append(tree)
    stats.splits = sum(_count_splits(t) for t in trees)
    out = [
        # Mask arithmetic, not ``c ? a : b``: gcc turns nested ternaries back into branches.
        "#define FS_SELECT(c, a, b) (((a) & -(c)) | ((b) & ~-(c)))",
        lines[start],
    ]
    if any("tmp" in line for line in body):
        out.append("  unsigned int tmp;")  # categorical tests use it
    # A local accumulator: through ``result`` (which may alias ``data`` as far as the compiler
    # knows) every leaf would be a load-add-store.
    out.append("  double acc = result[0];")
    for tree in trees:
        _emit(tree, out, "  ", branch_free_max_splits, stats)
    out.append("  result[0] = acc;")
    out.append("}")
    rewritten = "\n".join([*lines[:start], *out, *lines[end + 1 :]])
    return rewritten, stats


# --------------------------------------------------------------------------------------------
# The driver: fs_* entry points compiled into the same library
# --------------------------------------------------------------------------------------------

_DRIVER_TEMPLATE = r"""/* fraudstream driver, generated by scoring/compiled.py (ABI %(abi)d).
 * Batch and single-row entry points around tl2cgen's predict(); see that module's docstring. */
#include "header.h"
#include <stdint.h>
#include <stdlib.h>

#define FS_NUM_FEATURE %(num_feature)d
#define FS_BLOCK_ROWS %(block_rows)d
#define FS_ZERO_THRESHOLD %(zero_threshold)s

%(unit_decls)s

static const char fs_build_info_json[] = %(build_info)s;

int32_t fs_abi_version(void) { return %(abi)d; }
int32_t fs_num_feature(void) { return FS_NUM_FEATURE; }
const char* fs_build_info(void) { return fs_build_info_json; }

/* LightGBM's input rules that tl2cgen's code lacks, applied to one row in Entry layout. */
static inline void fs_fix_row(union Entry* e) {
%(fixups)s
}

/* LightGBM's predictor leaves |x| <= kZeroThreshold out of the row: it scores as 0.0. */
static inline double fs_snap_zero(double v) {
  return (v >= -FS_ZERO_THRESHOLD && v <= FS_ZERO_THRESHOLD) ? 0.0 : v;
}

static inline void fs_load_row_f64(const double* x, union Entry* e) {
  for (int j = 0; j < FS_NUM_FEATURE; ++j) e[j].fvalue = fs_snap_zero(x[j]);
  fs_fix_row(e);
}

static inline void fs_load_row_f32(const float* x, union Entry* e) {
  for (int j = 0; j < FS_NUM_FEATURE; ++j) e[j].fvalue = fs_snap_zero((double)x[j]);
  fs_fix_row(e);
}

/* What tl2cgen's predict() does after the last tree (base score, averaging), copied from it. */
static inline void fs_finish(double* result) {
%(epilogue)s
}

/* Trees unit by unit over a block of rows: one unit's code is reused FS_BLOCK_ROWS times
 * while it is in the instruction cache. Each row still sums its trees in model order. */
static void fs_eval_block(union Entry* e, double* out, int64_t m) {
%(block_body)s
}

double fs_score_one_f64(const double* x) {
  union Entry e[FS_NUM_FEATURE];
  double r = 0.0;
  fs_load_row_f64(x, e);
  predict(e, 0, &r);
  return r;
}

#define FS_SCORE_MANY(NAME, T, LOAD)                                                   \
  int NAME(const T* X, int64_t n_rows, int64_t row_stride, double* out) {              \
    const int64_t cap = n_rows < FS_BLOCK_ROWS ? (n_rows > 0 ? n_rows : 1) : FS_BLOCK_ROWS; \
    union Entry* e = (union Entry*)malloc(sizeof(union Entry) * FS_NUM_FEATURE * cap); \
    if (e == NULL) return -1;                                                          \
    for (int64_t i0 = 0; i0 < n_rows; i0 += FS_BLOCK_ROWS) {                           \
      const int64_t m = n_rows - i0 < FS_BLOCK_ROWS ? n_rows - i0 : FS_BLOCK_ROWS;     \
      for (int64_t i = 0; i < m; ++i) {                                                \
        LOAD(X + (i0 + i) * row_stride, e + i * FS_NUM_FEATURE);                       \
        out[i0 + i] = 0.0;                                                             \
      }                                                                                \
      fs_eval_block(e, out + i0, m);                                                   \
    }                                                                                  \
    free(e);                                                                           \
    return 0;                                                                          \
  }

FS_SCORE_MANY(fs_score_many_f64, double, fs_load_row_f64)
FS_SCORE_MANY(fs_score_many_f32, float, fs_load_row_f32)
"""

_EPILOGUE = re.compile(
    r"predict_unit(\d+)\(data, result\);\n(?P<epilogue>(?:(?!predict_unit).)*?)"
    r"\n\s*// Apply postprocessor",
    re.S,
)


def _c_double(value: float) -> str:
    """An exact C99 literal (hex float) for a double."""
    return float(value).hex()


def _driver_source(
    *,
    num_feature: int,
    feature_kinds: Sequence[int],
    units: int,
    epilogue: str | None,
    stock_entries: bool,
    block_rows: int,
    build_info: dict[str, Any],
) -> str:
    fixups: list[str] = []
    for j, kind in enumerate(feature_kinds):
        if kind == FEATURE_CATEGORICAL:
            # LightGBM casts to int (truncation), so (-1, 0) is category 0.
            fixups.append(
                f"  if (e[{j}].fvalue > -1.0 && e[{j}].fvalue < 0.0) e[{j}].fvalue = 0.0;"
            )
        elif kind == FEATURE_ZERO_AS_MISSING:
            # Already snapped: a zero here is what LightGBM calls missing for this feature.
            fixups.append(f"  if (e[{j}].fvalue == 0.0) e[{j}].fvalue = NAN;")
    if stock_entries:
        # Unrewritten tl2cgen code reads the missing flag of the union.
        fixups.append(
            "  for (int j = 0; j < FS_NUM_FEATURE; ++j) if (isnan(e[j].fvalue)) e[j].missing = -1;"
        )
    if not fixups:
        fixups.append("  (void)e;")
    if epilogue is not None and units > 0:
        unit_decls = "\n".join(
            f"void predict_unit{k}(union Entry* data, double* result);" for k in range(units)
        )
        loops = [
            f"  for (int64_t i = 0; i < m; ++i) predict_unit{k}(e + i * FS_NUM_FEATURE, out + i);"
            for k in range(units)
        ]
        loops.append(
            "  for (int64_t i = 0; i < m; ++i) { fs_finish(out + i); postprocess(out + i); }"
        )
        block_body = "\n".join(loops)
    else:
        unit_decls = ""
        epilogue = "  (void)result;"
        block_body = (
            "  for (int64_t i = 0; i < m; ++i) predict(e + i * FS_NUM_FEATURE, 0, out + i);"
        )
    info_json = json.dumps(build_info, sort_keys=True)
    return _DRIVER_TEMPLATE % {
        "abi": DRIVER_ABI,
        "num_feature": num_feature,
        "block_rows": block_rows,
        "zero_threshold": _c_double(LIGHTGBM_ZERO_THRESHOLD),
        "unit_decls": unit_decls,
        "build_info": json.dumps(info_json),  # a C string literal is a JSON string literal here
        "fixups": "\n".join(fixups),
        "epilogue": epilogue,
        "block_body": block_body,
    }


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------

#: Upper bound on one block of rows in Entry layout (see ``block_rows``): half of a common L2.
BLOCK_BYTES = 256 * 1024

#: Flags every build uses. -O3 only: no -ffast-math (it would break NaN tests and the exact sum),
#: no -march=native unless asked (the library must run on other x86_64 hosts of the fleet).
BASE_CFLAGS: tuple[str, ...] = ("-O3", "-fPIC", "-std=c99")
NATIVE_CFLAGS: tuple[str, ...] = ("-march=native",)


@dataclass(frozen=True)
class BuildInfo:
    """How a library was built; the registry stores it in the manifest."""

    lib_sha256: str
    num_features: int
    num_trees: int
    cflags: tuple[str, ...]
    compiler: str
    platform: dict[str, str]
    tl2cgen_version: str
    treelite_version: str
    units: int
    optimize: bool
    quantize: bool
    native: bool
    block_rows: int
    branch_free_max_splits: int
    rewrite: dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cflags"] = list(self.cflags)
        return d


def compiler_identity(cc: str = "gcc") -> str:
    """``"gcc 12.2.0 x86_64-linux-gnu"``: what a library's machine code depends on."""
    try:
        version = subprocess.run(
            [cc, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, check=True
        ).stdout.strip()
        machine = subprocess.run(
            [cc, "-dumpmachine"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ModelCompileError(f"C compiler {cc!r} is not usable: {exc}") from exc
    return f"{Path(cc).name} {version} {machine}"


def platform_identity(*, native: bool = False) -> dict[str, str]:
    """The host properties a library depends on; with ``native`` also the CPU's feature flags."""
    libc, libc_version = platform.libc_ver()
    ident = {
        "system": platform.system(),
        "machine": platform.machine(),
        "libc": f"{libc} {libc_version}".strip(),
    }
    if native:
        ident["cpu_flags_sha256"] = hashlib.sha256(_cpu_flags().encode()).hexdigest()
    return ident


def _cpu_flags() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    return platform.processor()


def compile_model(
    model_path: str | Path,
    lib_path: str | Path,
    *,
    optimize: bool = True,
    quantize: bool = False,
    native: bool = False,
    trees_per_unit: int = 32,
    block_rows: int = 512,
    branch_free_max_splits: int = 7,
    cc: str = "gcc",
    extra_cflags: Sequence[str] = (),
    jobs: int | None = None,
) -> BuildInfo:
    """Compile a LightGBM model file into a shared library at ``lib_path``.

    Stands for::

        model = treelite.frontend.load_lightgbm_model(<normalised model.txt>)
        tl2cgen.generate_c_code(model, src, params={"parallel_comp": units, "quantize": ...})
        <rewrite pass over src/tu*.c>; <write src/fs_driver.c>
        gcc -O3 -fPIC -std=c99 -c src/*.c; gcc -shared -o lib_path *.o -lm

    Options: ``optimize`` runs the rewrite pass (off: tl2cgen's code as generated, scored through
    the union's missing flag); ``quantize`` is tl2cgen's threshold quantisation (implies
    ``optimize=False``: quantised code overwrites the row in place, which the rewritten missing
    test cannot see); ``native`` adds ``-march=native`` — faster on this host, not portable, so
    the registry records the CPU and refuses the library elsewhere; ``trees_per_unit`` sets
    tl2cgen's ``parallel_comp`` (trees per translation unit = per cache block); ``block_rows``
    is how many rows each unit scores before the next unit runs (capped so a block stays within
    ``BLOCK_BYTES``); ``branch_free_max_splits`` is the largest subtree made branch-free (1 = leaf
    pairs). The defaults are what ``benchmarks/model_inference.py`` found fastest.
    """
    import tl2cgen
    import treelite

    started = time.perf_counter()
    model_path, lib_path = Path(model_path), Path(lib_path)
    model, info = load_treelite_model(model_path)
    if quantize:
        optimize = False
    units = max(1, math.ceil(model.num_tree / max(1, trees_per_unit)))
    # A block of rows should stay in L2 while every unit runs over it.
    block_rows = max(1, min(block_rows, BLOCK_BYTES // (8 * info.num_features)))
    cflags = (*BASE_CFLAGS, *(NATIVE_CFLAGS if native else ()), *extra_cflags)
    compiler = compiler_identity(cc)
    build_info: dict[str, Any] = {
        "tl2cgen_version": tl2cgen.__version__,
        "treelite_version": treelite.__version__,
        "cflags": list(cflags),
        "compiler": compiler,
        "optimize": optimize,
        "quantize": quantize,
        "units": units,
    }
    with tempfile.TemporaryDirectory(prefix="fraud-build-") as tmp:
        src = Path(tmp) / "src"
        params: dict[str, Any] = {"parallel_comp": units}
        if quantize:
            params["quantize"] = 1
        tl2cgen.generate_c_code(model, src, params)
        stats = _RewriteStats()
        if optimize:
            try:
                stats = _rewrite_sources(src, branch_free_max_splits=branch_free_max_splits)
            except _RewriteError as exc:
                # tl2cgen wrote something the rewrite pass does not know: build its code as
                # generated (exact, just slower) rather than guess.
                log.warning("rewrite pass skipped (%s); using tl2cgen's code as generated", exc)
                optimize = build_info["optimize"] = False
                shutil.rmtree(src)
                tl2cgen.generate_c_code(model, src, params)
        main_c = (src / "main.c").read_text()
        m = _EPILOGUE.search(main_c) if not quantize else None
        epilogue = None
        if m is not None and int(m[1]) == units - 1 and "data" not in m["epilogue"]:
            epilogue = m["epilogue"]
        (src / "fs_driver.c").write_text(
            _driver_source(
                num_feature=info.num_features,
                feature_kinds=info.feature_kinds,
                units=units,
                epilogue=epilogue,
                stock_entries=not optimize,
                block_rows=block_rows,
                build_info=build_info,
            )
        )
        if dump_dir := os.environ.get("FRAUD_DUMP_C"):
            dest = Path(dump_dir) / f"{lib_path.stem}-{int(time.time())}"
            shutil.copytree(src, dest)
            log.info("generated C kept in %s", dest)
        tmp_lib = Path(tmp) / "model.so"
        _run_compiler(cc, src, tmp_lib, cflags, jobs=jobs)
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp_lib, lib_path)
    return BuildInfo(
        lib_sha256=file_sha256(lib_path),
        num_features=info.num_features,
        num_trees=model.num_tree,
        cflags=tuple(cflags),
        compiler=compiler,
        platform=platform_identity(native=native),
        tl2cgen_version=tl2cgen.__version__,
        treelite_version=treelite.__version__,
        units=units,
        optimize=optimize,
        quantize=quantize,
        native=native,
        block_rows=block_rows,
        branch_free_max_splits=branch_free_max_splits,
        rewrite=asdict(stats),
        build_seconds=round(time.perf_counter() - started, 3),
    )


def _rewrite_sources(src: Path, *, branch_free_max_splits: int) -> _RewriteStats:
    """Rewrite every tl2cgen source in ``src``; refuse to build if a missing flag survives."""
    total = _RewriteStats()
    for path in sorted(src.glob("tu*.c")):
        text, stats = _rewrite_unit_source(
            path.read_text(), branch_free_max_splits=branch_free_max_splits
        )
        path.write_text(text)
        total.splits += stats.splits
        total.branch_free_subtrees += stats.branch_free_subtrees
        total.branch_free_splits += stats.branch_free_splits
    main = src / "main.c"
    main.write_text(_MISSING_FLAG.sub(r"!isnan(data[\1].fvalue)", main.read_text()))
    for path in src.glob("*.c"):
        if ".missing" in path.read_text():
            raise ModelCompileError(f"rewrite pass left a missing-flag test in {path.name}")
    return total


def _run_compiler(
    cc: str, src: Path, lib: Path, cflags: Sequence[str], *, jobs: int | None
) -> None:
    sources = sorted(src.glob("*.c"))

    def compile_one(source: Path) -> Path:
        obj = source.with_suffix(".o")
        _check_output([cc, "-c", *cflags, "-o", str(obj), str(source)])
        return obj

    workers = jobs or min(len(sources), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        objects = list(pool.map(compile_one, sources))
    _check_output([cc, "-shared", *cflags, "-o", str(lib), *map(str, objects), "-lm"])


def _check_output(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except OSError as exc:
        raise ModelCompileError(f"cannot run {argv[0]!r}: {exc}") from exc
    if proc.returncode != 0:
        raise ModelCompileError(f"{' '.join(argv[:3])} … failed:\n{proc.stderr[-4000:]}")


# --------------------------------------------------------------------------------------------
# Calling the library: numba shims that call a C function pointer held as an integer
# --------------------------------------------------------------------------------------------
# The addresses are arguments, not compile-time constants, so these shims compile once per
# process (not per model), and a call costs numba's dispatch (~0.2 µs) plus the C function.

_I8P = llvm_ir.IntType(8).as_pointer()
_I64 = llvm_ir.IntType(64)


@intrinsic
def _call_score_one(typingctx, fn_addr, x_addr):
    """``double fs_score_one_f64(const double* x)`` at address ``fn_addr``."""
    sig = types.float64(types.uintp, types.uintp)

    def codegen(context, builder, signature, args):
        fnty = llvm_ir.FunctionType(llvm_ir.DoubleType(), [_I8P])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(fn, [builder.inttoptr(args[1], _I8P)])

    return sig, codegen


@intrinsic
def _call_score_many(typingctx, fn_addr, x_addr, n_rows, row_stride, out_addr):
    """``int fs_score_many_*(const T* X, int64 n_rows, int64 row_stride, double* out)``."""
    sig = types.int32(types.uintp, types.uintp, types.int64, types.int64, types.uintp)

    def codegen(context, builder, signature, args):
        fnty = llvm_ir.FunctionType(llvm_ir.IntType(32), [_I8P, _I64, _I64, _I8P])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(
            fn,
            [builder.inttoptr(args[1], _I8P), args[2], args[3], builder.inttoptr(args[4], _I8P)],
        )

    return sig, codegen


def _c_float64(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """A C-contiguous float64 view or copy of a row (the overload below is what numba runs)."""
    return np.ascontiguousarray(x, dtype=np.float64)


@overload(_c_float64)
def _c_float64_impl(x):
    # Decided per argument type at compile time: a C-contiguous float64 row is used in place.
    if isinstance(x, types.Array) and x.dtype == types.float64 and x.layout == "C":
        return lambda x: x
    return lambda x: np.ascontiguousarray(x).astype(np.float64)


@njit(cache=True)
def _score_one_nb(fn_addr: int, num_features: int, x: npt.NDArray[Any]) -> float:
    if x.shape[0] != num_features:
        raise ValueError("row length differs from the model's number of features")
    row = _c_float64(x)
    return _call_score_one(fn_addr, row.ctypes.data)  # type: ignore[call-arg]


# nogil: a batch can take milliseconds; other threads (Kafka I/O, the API) keep running.
@njit(cache=True, nogil=True)
def _score_many_nb(
    fn_addr: int, X: npt.NDArray[Any], row_stride: int, out: npt.NDArray[np.float64]
) -> int:
    return _call_score_many(  # type: ignore[call-arg]
        fn_addr, X.ctypes.data, X.shape[0], row_stride, out.ctypes.data
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected_sha256.lower()):
        raise ModelIntegrityError(
            f"{path}: SHA-256 {actual} does not match the expected {expected_sha256}"
        )
    return data


def _dlopen_bytes(data: bytes, name: str) -> tuple[ctypes.CDLL, int | None]:
    """Load a shared library from bytes already verified in memory.

    The bytes go to an anonymous memory file, so what the loader maps is what was hashed. The
    loader remembers libraries by path, so the ``/proc/self/fd/N`` path must stay unique while the
    library is loaded: the caller keeps the returned descriptor open until after ``dlclose``.
    Without memfd (or /proc), a private temporary file with a random name does the same job.
    """
    mode = os.RTLD_LOCAL | os.RTLD_NOW
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create(f"fraudstream-{name}", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return ctypes.CDLL(f"/proc/self/fd/{fd}", mode=mode), fd
        except OSError as exc:
            os.close(fd)
            log.debug("loading from memfd failed (%s); trying a private temporary file", exc)
        except BaseException:
            os.close(fd)
            raise
    tmpdir = tempfile.mkdtemp(prefix="fraud-lib-")
    try:
        path = Path(tmpdir) / f"{name}.so"
        path.write_bytes(data)
        return ctypes.CDLL(str(path), mode=mode), None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the mapping keeps the file alive


def _release_library(handle: int, fd: int | None) -> None:
    with contextlib.suppress(OSError):
        _ctypes.dlclose(handle)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _warm_up_shims(num_features: int, one_addr: int, many_f64: int, many_f32: int) -> None:
    """Compile the numba shims for the common argument types now, not on the first request.

    Numba compiles each shim once per process and argument types; later calls only dispatch.
    """
    x64 = np.zeros(num_features)
    out = np.empty(1)
    _score_one_nb(one_addr, num_features, x64)
    _score_one_nb(one_addr, num_features, x64.astype(np.float32))
    _score_many_nb(many_f64, x64.reshape(1, -1), num_features, out)
    _score_many_nb(many_f32, x64.astype(np.float32).reshape(1, -1), num_features, out)


class CompiledModel:
    """Scores feature rows with a compiled model library (or treelite GTIL as the fallback).

    Immutable after loading and safe to share between threads: the C code keeps no state.

    ``engine`` says which path scores: ``"tl2cgen"`` (the native library) or ``"gtil"``.
    """

    engine: Literal["tl2cgen", "gtil"]
    num_features: int
    lib_sha256: str | None
    build_info: dict[str, Any]

    def __init__(self) -> None:  # use load() / from_gtil()
        self._lib: ctypes.CDLL | None = None
        self._one_addr = 0
        self._many_f64_addr = 0
        self._many_f32_addr = 0
        self._gtil_model: Any = None
        self._feature_kinds: tuple[int, ...] = ()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.lib_sha256 = None
        self.build_info = {}

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        lib_path: str | Path,
        *,
        expected_sha256: str,
        num_features: int,
        model_path: str | Path | None = None,
        model_sha256: str | None = None,
        fallback: bool = True,
    ) -> CompiledModel:
        """Verify and load a compiled library.

        The SHA-256 is checked before anything is loaded: a mismatch raises
        :class:`ModelIntegrityError` and nothing from the file runs. A library that cannot be
        loaded (another platform, missing ``fs_*`` entry points, wrong feature count) falls back
        to GTIL on ``model_path`` when ``fallback`` is true and a model file is given; otherwise
        the error propagates (``model_sha256``, when given, is checked before GTIL reads the
        model). A digest mismatch of the library never falls back.
        """
        lib_path = Path(lib_path)
        data = _read_verified(lib_path, expected_sha256)
        self = cls()
        try:
            self._open_library(data, name=expected_sha256[:16], num_features=num_features)
        except (OSError, AttributeError, ModelIntegrityError) as exc:
            if not fallback or model_path is None:
                raise
            log.warning(
                "compiled library %s unusable (%s); scoring with treelite GTIL instead",
                lib_path,
                exc,
            )
            return cls.from_gtil(
                model_path, num_features=num_features, expected_sha256=model_sha256
            )
        self.lib_sha256 = expected_sha256.lower()
        return self

    @classmethod
    def from_gtil(
        cls,
        model_path: str | Path,
        *,
        num_features: int | None = None,
        expected_sha256: str | None = None,
    ) -> CompiledModel:
        """Score with treelite's reference predictor (GTIL) on the normalised model."""
        model_path = Path(model_path)
        if expected_sha256 is not None:
            _read_verified(model_path, expected_sha256)
        model, info = load_treelite_model(model_path)
        if num_features is not None and info.num_features != num_features:
            raise ModelIntegrityError(
                f"{model_path} has {info.num_features} features, expected {num_features}"
            )
        self = cls()
        self.engine = "gtil"
        self.num_features = info.num_features
        self._gtil_model = model
        self._feature_kinds = info.feature_kinds
        return self

    def _open_library(self, data: bytes, *, name: str, num_features: int) -> None:
        lib, fd = _dlopen_bytes(data, name)
        # Release the mapping when this object goes: nothing else holds the function addresses
        # (the numba shims take them as arguments), and a call in flight holds a reference.
        self._finalizer = weakref.finalize(self, _release_library, lib._handle, fd)
        lib.fs_abi_version.restype = ctypes.c_int32
        lib.fs_num_feature.restype = ctypes.c_int32
        lib.fs_build_info.restype = ctypes.c_char_p
        abi = lib.fs_abi_version()
        if abi != DRIVER_ABI:
            raise ModelIntegrityError(f"library driver ABI {abi}, this runtime speaks {DRIVER_ABI}")
        lib_features = lib.fs_num_feature()
        if lib_features != num_features:
            raise ModelIntegrityError(
                f"library scores {lib_features} features, expected {num_features}"
            )
        self._lib = lib
        self._one_addr = _address(lib, "fs_score_one_f64")
        self._many_f64_addr = _address(lib, "fs_score_many_f64")
        self._many_f32_addr = _address(lib, "fs_score_many_f32")
        self.engine = "tl2cgen"
        self.num_features = num_features
        self.build_info = json.loads(lib.fs_build_info() or b"{}")
        _warm_up_shims(num_features, self._one_addr, self._many_f64_addr, self._many_f32_addr)

    def close(self) -> None:
        """Unload the library now (optional; dropping the object does the same later).

        Only call when no other thread is scoring with this model.
        """
        if self._finalizer is not None:
            self._finalizer()
        self._lib = None
        self._one_addr = self._many_f64_addr = self._many_f32_addr = 0

    # ---- scoring ------------------------------------------------------------------------

    def score_many(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probability of fraud for each row of ``X`` (2-D, float32 or float64), as float64."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.num_features:
            raise ValueError(f"expected an array of shape (n, {self.num_features}), got {X.shape}")
        if self.engine == "gtil":
            return self._gtil_score(X)
        if not self._one_addr:
            raise RuntimeError("model was closed")
        if X.dtype == _F32:
            addr = self._many_f32_addr
        else:
            addr = self._many_f64_addr
            if X.dtype != _F64:
                X = X.astype(np.float64)
        itemsize = X.dtype.itemsize
        # Rows may be strided (a column slice of a wider table); elements within a row may not.
        if X.strides[1] != itemsize or X.strides[0] % itemsize or X.strides[0] < 0:
            X = np.ascontiguousarray(X)
        out = np.empty(X.shape[0], dtype=np.float64)
        if X.shape[0] == 0:
            return out
        if _score_many_nb(addr, X, X.strides[0] // itemsize, out) != 0:
            raise MemoryError("compiled model could not allocate its row buffer")
        return out

    def score_one(self, x: npt.ArrayLike) -> float:
        """Probability of fraud for one row (1-D array of ``num_features`` values)."""
        # Fast path, a handful of identity tests: numba's dispatcher does the rest (a strided or
        # float32 row gets its own compiled specialisation that copies it).
        if (
            type(x) is np.ndarray
            and x.ndim == 1
            and (x.dtype is _F64 or x.dtype is _F32)
            and self._one_addr
        ):
            return _score_one_nb(self._one_addr, self.num_features, x)
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 1 or x.shape[0] != self.num_features:
            raise ValueError(f"expected a row of {self.num_features} values, got shape {x.shape}")
        if self.engine == "gtil":
            return float(self._gtil_score(x.reshape(1, -1))[0])
        if not self._one_addr:
            raise RuntimeError("model was closed")
        return _score_one_nb(self._one_addr, self.num_features, x)

    def _gtil_score(self, X: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        import treelite

        rows = prepare_rows(X, self._feature_kinds)
        if rows.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        pred = treelite.gtil.predict(self._gtil_model, rows, nthread=1)
        return np.asarray(pred, dtype=np.float64).reshape(-1)

    def __repr__(self) -> str:
        digest = f" lib={self.lib_sha256[:12]}" if self.lib_sha256 else ""
        return f"<CompiledModel engine={self.engine} features={self.num_features}{digest}>"


def _address(lib: ctypes.CDLL, name: str) -> int:
    fn = getattr(lib, name)  # AttributeError when the symbol is missing: not our driver
    addr = ctypes.cast(fn, ctypes.c_void_p).value
    if not addr:
        raise AttributeError(f"{name} has no address")
    return addr
