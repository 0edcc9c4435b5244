"""Model inference, single thread: LightGBM vs treelite GTIL vs our compiled scorer vs lleaves.

    .venv/bin/python benchmarks/model_inference.py             # full run (first run: builds)
    .venv/bin/python benchmarks/model_inference.py --quick     # fewer rounds and calls
    .venv/bin/python benchmarks/model_inference.py --quick --models small --variants engines \
        --no-lleaves --out DIR   # the engines side by side on the small model only (~1 min)

Trains two synthetic models (30 features; 200 trees × 31 leaves, 1000 trees × 63 leaves), builds
every variant of ``scoring.compiled`` worth comparing, and measures side by side in one run:

* batch throughput — rows/s on 10 000-row batches, median over ``--rounds``; rounds are
  interleaved across all variants (lleaves included) so machine noise hits everyone alike;
* single-row latency — µs per call, median and p99 over ``--single-calls`` calls cycling through
  1 000 different rows (one repeated row would let the branch predictor learn it).

lleaves 1.3 needs llvmlite 0.44, which our numba does not accept: it runs in its own venv
(``benchmarks/.venv-lleaves``, created here on first use) through ``lleaves_runner.py``, a
subprocess that times its own calls. Every variant's predictions are checked against LightGBM.
Everything is pinned to one CPU. Builds are cached in ``benchmarks/.build`` (git-ignored).

Writes ``benchmarks/results/model_inference.{json,md,png}``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import typer  # noqa: E402
from llvmlite import ir as _ir  # noqa: E402
from numba import njit  # noqa: E402
from numba import types as _types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from scoring import compiled  # noqa: E402
from scoring.compiled import CompiledModel, compile_model, compiler_identity  # noqa: E402

BENCH = ROOT / "benchmarks"
BUILD = BENCH / ".build"
RESULTS = BENCH / "results"
LLEAVES_VENV = BENCH / ".venv-lleaves"
# lleaves 1.3.0 is the current release; it pins llvmlite 0.44 (LLVM 15 API).
LLEAVES_PINS = ["lleaves==1.3.0", "llvmlite==0.44.0", "numpy", "lightgbm"]

NUM_FEATURES = 30
BATCH_ROWS = 10_000
MODELS = {"small": {"trees": 200, "leaves": 31}, "large": {"trees": 1000, "leaves": 63}}
DEFAULT = "compiled: default"
STOCK = "compiled: tl2cgen code as generated"

# Build variants of scoring.compiled: (label, compile_model options). The default options come
# last in the sweep so the table reads as "what each step adds".
BUILD_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    (STOCK, {"optimize": False}),
    ("compiled: tl2cgen quantize", {"quantize": True}),
    ("compiled: rewrite, all branches", {"branch_free_max_splits": 0}),
    ("compiled: rewrite, branch-free leaf pairs", {"branch_free_max_splits": 1}),
    ("compiled: rewrite, branch-free ≤3 splits", {"branch_free_max_splits": 3}),
    ("compiled: rewrite, branch-free ≤5 splits", {"branch_free_max_splits": 5}),
    ("compiled: rewrite, branch-free ≤15 splits", {"branch_free_max_splits": 15}),
    ("compiled: default, no tree blocking", {"block_rows": 1}),
    ("compiled: default, 128-row blocks", {"block_rows": 128}),
    ("compiled: default, 16 trees per unit", {"trees_per_unit": 16}),
    ("compiled: default + -march=native", {"native": True}),
    (DEFAULT, {}),  # branch-free ≤7 splits, 32 trees per unit, 512-row blocks
]


# --------------------------------------------------------------------------------- models


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Card-transaction-like features: skewed amounts, counts, rates, 5 % NaN."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, NUM_FEATURES))
    X[:, 0] = np.exp(rng.normal(3.5, 1.8, n))  # amount
    X[:, 1:6] = rng.poisson(1.5, (n, 5))  # velocity counts
    X[:, 6] = rng.exponential(3600, n)  # seconds since previous
    X[:, 7] = rng.beta(1, 30, n)  # merchant fraud rate
    logit = (
        0.6 * (np.log(X[:, 0]) - 4)
        + 0.5 * X[:, 1]
        - 0.3 * np.log1p(X[:, 6] / 60)
        + 25 * X[:, 7]
        + np.sin(2 * X[:, 8])
        + X[:, 9] * X[:, 10]
        - 2.5
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


def train_models(names: tuple[str, ...] = tuple(MODELS)) -> dict[str, Path]:
    out = {}
    (BUILD / "models").mkdir(parents=True, exist_ok=True)
    X, y = synthetic(40_000, seed=11)
    for name, shape in MODELS.items():
        if name not in names:
            continue
        params = {
            "objective": "binary",
            "num_leaves": shape["leaves"],
            "min_data_in_leaf": 5,
            "learning_rate": 0.05,
            "seed": 7,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,  # deterministic across machines
            "verbose": -1,
        }
        key = hashlib.sha256(json.dumps([params, shape], sort_keys=True).encode()).hexdigest()
        path = BUILD / "models" / f"{name}-{key[:12]}.txt"
        if not path.exists():
            print(f"training {name} ({shape['trees']} trees × {shape['leaves']} leaves) …")
            booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=shape["trees"])
            booster.save_model(path)
        out[name] = path
    return out


def build(model: Path, options: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Compile (cached by model, options, compiler and the compiler module's source)."""
    key_src = json.dumps(
        {
            "model": compiled.file_sha256(model),
            "options": options,
            "cc": compiler_identity(),
            "module": compiled.file_sha256(compiled.__file__),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    lib = BUILD / "libs" / f"{model.stem}-{key}.so"
    meta = lib.with_suffix(".json")
    if not (lib.exists() and meta.exists()):
        print(f"  building {model.stem} {options or '(default)'} …", flush=True)
        info = compile_model(model, lib, **options)
        meta.write_text(json.dumps(info.to_dict()))
    return lib, json.loads(meta.read_text())


# ---------------------------------------------------------------------- ways of calling


@intrinsic
def _call_predict(typingctx, fn_addr, data_addr, result_addr):  # type: ignore[no-untyped-def]
    """tl2cgen's ``void predict(union Entry* data, int pred_margin, double* result)``."""
    sig = _types.void(_types.uintp, _types.uintp, _types.uintp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i8p = _ir.IntType(8).as_pointer()
        fnty = _ir.FunctionType(_ir.VoidType(), [i8p, _ir.IntType(32), i8p])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(
            fn,
            [
                builder.inttoptr(args[1], i8p),
                _ir.Constant(_ir.IntType(32), 0),
                builder.inttoptr(args[2], i8p),
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True)
def _loop_score_one(fn_addr: int, X: np.ndarray, out: np.ndarray) -> None:
    # The brief's first design: a numba loop over rows, one C call per row (no tree blocking).
    for i in range(X.shape[0]):
        out[i] = compiled._call_score_one(fn_addr, X[i].ctypes.data)  # type: ignore[call-arg]


@njit(nogil=True)
def _loop_predict_entry_union(fn_addr: int, X: np.ndarray, out: np.ndarray) -> None:
    # tl2cgen's own predict(union Entry*, 0, double*) on its unmodified code: build the union
    # array in numba (NaN -> missing = -1, i.e. all ones in the low word), one call per row.
    n, nf = X.shape
    entry = np.empty(nf, dtype=np.float64)
    bits = entry.view(np.int64)
    res = np.empty(1, dtype=np.float64)
    for i in range(n):
        for j in range(nf):
            v = X[i, j]
            if np.isnan(v):
                bits[j] = -1
            else:
                entry[j] = v
        res[0] = 0.0
        _call_predict(fn_addr, entry.ctypes.data, res.ctypes.data)
        out[i] = res[0]


@njit(nogil=True)
def _loop_predict_rows_as_is(fn_addr: int, X: np.ndarray, out: np.ndarray) -> None:
    # Rewritten code tests isnan(), so a float64 row is already a valid Entry array: no copy.
    res = np.empty(1, dtype=np.float64)
    for i in range(X.shape[0]):
        res[0] = 0.0
        _call_predict(fn_addr, X[i].ctypes.data, res.ctypes.data)
        out[i] = res[0]


def symbol(lib: ctypes.CDLL, name: str) -> int:
    addr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    assert addr
    return addr


# ------------------------------------------------------------------------------- lleaves


class Lleaves:
    """The lleaves runner subprocess (see lleaves_runner.py)."""

    def __init__(self, data: Path, models: dict[str, Path], cpu: int | None) -> None:
        python = ensure_lleaves_venv()
        argv = [str(python), str(BENCH / "lleaves_runner.py"), "--data", str(data)]
        for name, path in models.items():
            argv += ["--model", f"{name}={path}"]
        argv += ["--cache-dir", str(BUILD / "lleaves")]
        (BUILD / "lleaves").mkdir(parents=True, exist_ok=True)

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        print("starting lleaves (compiles both models on first run) …", flush=True)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            preexec_fn=pin,  # only sets the CPU affinity
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("lleaves runner exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            with_timeout(lambda: self.ask("quit"), default=None)
            self.proc.wait(timeout=30)


def with_timeout(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception:
        return default


def ensure_lleaves_venv() -> Path:
    python = LLEAVES_VENV / "bin" / "python"
    if python.exists():
        return python
    base = shutil.which("python3.11") or sys.executable
    print(f"creating {LLEAVES_VENV} ({' '.join(LLEAVES_PINS)}) …", flush=True)
    subprocess.run([base, "-m", "venv", str(LLEAVES_VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *LLEAVES_PINS,
        ],
        check=True,
    )
    return python


# ----------------------------------------------------------------------------- measuring


@dataclass
class Variant:
    label: str
    group: str  # "baseline" | "compiled" | "call path" | "lleaves"
    batch: dict[str, Callable[[], np.ndarray] | None] = field(default_factory=dict)
    single: dict[str, Callable[[int], Any] | None] = field(default_factory=dict)
    build: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    slow_single: bool = False  # ~50 µs+ per call: fewer calls


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(
    rounds: Annotated[int, typer.Option(help="Interleaved batch rounds (median reported).")] = 11,
    single_calls: Annotated[int, typer.Option(help="One-row calls per variant.")] = 20_000,
    quick: Annotated[bool, typer.Option(help="5 rounds, 4 000 single calls.")] = False,
    lleaves: Annotated[bool, typer.Option(help="Include lleaves.")] = True,
    out: Annotated[Path, typer.Option(help="Results directory.")] = RESULTS,
    render_only: Annotated[
        bool, typer.Option(help="Re-render .md and .png from the existing .json; measure nothing.")
    ] = False,
    models_: Annotated[
        str, typer.Option("--models", help="Models to measure: small, large or both.")
    ] = "small,large",
    variants_: Annotated[
        str,
        typer.Option(
            "--variants",
            help="all: every build and call-path variant; engines: LightGBM, GTIL, tl2cgen's "
            "runtime, tl2cgen's code in our driver and the default build (and lleaves).",
        ),
    ] = "all",
) -> None:
    if render_only:
        write_results(json.loads((out / "model_inference.json").read_text()), out)
        return
    if quick:
        rounds, single_calls = 5, 4_000
    names = tuple(m.strip() for m in models_.split(",") if m.strip())
    if not names or any(m not in MODELS for m in names) or "small" not in names:
        raise typer.BadParameter("--models: small, or small,large", param_hint="--models")
    if variants_ not in ("all", "engines"):
        raise typer.BadParameter("all or engines", param_hint="--variants")
    cpu = pin_to_one_cpu()
    models = train_models(names)
    X, _ = synthetic(BATCH_ROWS, seed=99)
    X = np.ascontiguousarray(X)
    X32 = X.astype(np.float32)
    data_path = BUILD / "eval.npy"
    np.save(data_path, X)
    rows = [np.ascontiguousarray(X[i]) for i in range(1000)]

    boosters = {m: lgb.Booster(model_file=str(p)) for m, p in models.items()}
    reference = {m: boosters[m].predict(X[:2000], num_threads=1) for m in models}
    variants = make_variants(models, boosters, X, X32, rows, sweep=variants_ == "all")

    ll = None
    if lleaves:
        try:
            ll = Lleaves(data_path, models, cpu)
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            print(f"lleaves unavailable: {exc}")
    if ll is not None:
        v = Variant("lleaves 1.3.0 (its own venv)", "lleaves", note="compiled for the host CPU")
        for m in models:
            v.batch[m] = lambda m=m: ll.ask(f"batch {m}")["seconds"]  # type: ignore[misc]
            v.single[m] = lambda n, m=m: ll.ask(f"single {m} {n}")["ns"]  # type: ignore[misc]
        variants.append(v)

    # ---- exactness: every variant against LightGBM on the first 2 000 rows -------------
    max_diff: dict[str, dict[str, float | None]] = {}
    for v in variants:
        max_diff[v.label] = {}
        for m in models:
            if v.group == "lleaves":
                assert ll is not None
                pred = np.asarray(ll.ask(f"check {m}")["pred"])
            elif v.batch.get(m) is None:
                max_diff[v.label][m] = None
                continue
            else:
                fn = v.batch[m]
                assert fn is not None
                pred = np.asarray(fn()).reshape(-1)[:2000]  # GTIL/tl2cgen give (n, 1, 1)
            max_diff[v.label][m] = float(np.abs(pred - reference[m]).max())

    # ---- batch throughput: rounds interleaved across variants ---------------------------
    print(f"batch: {rounds} rounds × {len(variants)} variants × {len(models)} models", flush=True)
    seconds: dict[str, dict[str, list[float]]] = {
        v.label: {m: [] for m in models} for v in variants
    }
    for r in range(rounds):
        for m in models:
            for v in variants:
                fn = v.batch.get(m)
                if fn is None:
                    continue
                if v.group == "lleaves":
                    seconds[v.label][m].append(float(fn()))  # type: ignore[arg-type]
                    continue
                t0 = time.perf_counter()
                fn()
                seconds[v.label][m].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{rounds}", flush=True)

    # ---- single-row latency: chunks interleaved across variants -------------------------
    chunk = min(2_000, single_calls)
    latency: dict[str, dict[str, list[int]]] = {v.label: {m: [] for m in models} for v in variants}
    print(f"single row: {single_calls} calls per variant", flush=True)
    for m in models:
        for _ in range(max(1, single_calls // chunk)):
            for v in variants:
                fn1 = v.single.get(m)
                if fn1 is None:
                    continue
                calls = max(50, chunk // 20) if v.slow_single else chunk
                latency[v.label][m].extend(fn1(calls))
    timer_ns = timer_overhead()

    if ll is not None:
        ll.close()

    report = summarise(variants, models, seconds, latency, max_diff, timer_ns, ll, cpu, rounds)
    write_results(report, out)


def make_variants(
    models: dict[str, Path],
    boosters: dict[str, lgb.Booster],
    X: np.ndarray,
    X32: np.ndarray,
    rows: list[np.ndarray],
    *,
    sweep: bool = True,
) -> list[Variant]:
    """Every variant; with ``sweep=False`` only the engines (the baselines, tl2cgen's code in our
    driver and the default build), which need two builds per model instead of twelve."""
    import tl2cgen
    import treelite

    variants: list[Variant] = []

    def per_call(fn: Callable[[np.ndarray], Any]) -> Callable[[int], list[int]]:
        def run(n: int) -> list[int]:
            ns = []
            gc.disable()
            try:
                for i in range(n):
                    row = rows[i % len(rows)]
                    t0 = time.perf_counter_ns()
                    fn(row)
                    ns.append(time.perf_counter_ns() - t0)
            finally:
                gc.enable()
            return ns

        return run

    lgbm = Variant("LightGBM predict (num_threads=1)", "baseline", slow_single=True)
    gtil = Variant("treelite GTIL (nthread=1)", "baseline", slow_single=True)
    stock_runtime = Variant(
        "tl2cgen.Predictor (its runtime, stock code)", "baseline", slow_single=True
    )
    for m, path in models.items():
        b = boosters[m]
        lgbm.batch[m] = lambda b=b: b.predict(X, num_threads=1)
        lgbm.single[m] = per_call(lambda r, b=b: b.predict(r.reshape(1, -1), num_threads=1))
        tl_model = treelite.frontend.load_lightgbm_model(path)
        gtil.batch[m] = lambda t=tl_model: treelite.gtil.predict(t, X, nthread=1)
        gtil.single[m] = per_call(
            lambda r, t=tl_model: treelite.gtil.predict(t, r.reshape(1, -1), nthread=1)
        )
        lib, _ = build(path, {"optimize": False})
        predictor = tl2cgen.Predictor(str(lib), nthread=1)
        dmat = tl2cgen.DMatrix(X)
        stock_runtime.batch[m] = lambda p=predictor, d=dmat: p.predict(d)
        stock_runtime.single[m] = per_call(
            lambda r, p=predictor: p.predict(tl2cgen.DMatrix(r.reshape(1, -1)))
        )
    variants += [lgbm, gtil, stock_runtime]

    loaded: dict[tuple[str, str], tuple[CompiledModel, Path]] = {}
    for label, options in BUILD_VARIANTS:
        if not sweep and label not in (STOCK, DEFAULT):
            continue
        v = Variant(label, "compiled")
        for m, path in models.items():
            lib, meta = build(path, options)
            model = CompiledModel.load(lib, expected_sha256=meta["lib_sha256"], num_features=30)
            assert model.engine == "tl2cgen"
            loaded[(label, m)] = (model, lib)
            v.build[m] = meta
            v.batch[m] = lambda model=model: model.score_many(X)
            v.single[m] = per_call(model.score_one)
        variants.append(v)
    if not sweep:
        return variants

    f32 = Variant(
        "compiled: default, float32 rows",
        "compiled",
        note="single-row time includes converting the float64 row to float32",
    )
    via_ctypes = Variant("call path: ctypes → fs_score_many (C batch)", "call path")
    numba_loop = Variant("call path: numba loop → fs_score_one per row", "call path")
    union_loop = Variant(
        "call path: numba loop → tl2cgen predict(), Entry union built in numba", "call path"
    )
    as_is_loop = Variant(
        "call path: numba loop → predict() on rewritten code, rows as-is", "call path"
    )
    batch_one = Variant("call path: score_many on a 1-row batch", "call path")
    for m in models:
        model, lib_path = loaded[(DEFAULT, m)]
        _, stock_lib = loaded[(STOCK, m)]
        f32.batch[m] = lambda model=model: model.score_many(X32)
        f32.single[m] = per_call(lambda r, model=model: model.score_one(r.astype(np.float32)))
        f32.build[m] = {}

        lib = ctypes.CDLL(str(lib_path))
        many = lib.fs_score_many_f64
        many.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        many.restype = ctypes.c_int
        one = lib.fs_score_one_f64
        one.argtypes = [ctypes.c_void_p]
        one.restype = ctypes.c_double

        def ctypes_batch(many: Any = many) -> np.ndarray:
            out = np.empty(X.shape[0])
            many(X.ctypes.data, X.shape[0], X.shape[1], out.ctypes.data)
            return out

        via_ctypes.batch[m] = ctypes_batch
        via_ctypes.single[m] = per_call(lambda r, one=one: one(r.ctypes.data))

        one_addr = symbol(lib, "fs_score_one_f64")

        def numba_rows(addr: int = one_addr) -> np.ndarray:
            out = np.empty(X.shape[0])
            _loop_score_one(addr, X, out)
            return out

        numba_loop.batch[m] = numba_rows

        stock_dl = ctypes.CDLL(str(stock_lib))
        stock_predict = symbol(stock_dl, "predict")

        def union_rows(addr: int = stock_predict) -> np.ndarray:
            out = np.empty(X.shape[0])
            _loop_predict_entry_union(addr, X, out)
            return out

        union_loop.batch[m] = union_rows
        union_loop.note = "stock code: misreads doubles whose low word is 0xFFFFFFFF"

        rewritten_predict = symbol(lib, "predict")

        def as_is_rows(addr: int = rewritten_predict) -> np.ndarray:
            out = np.empty(X.shape[0])
            _loop_predict_rows_as_is(addr, X, out)
            return out

        as_is_loop.batch[m] = as_is_rows
        as_is_loop.note = "skips LightGBM's input rules (fine for this all-numeric model)"
        batch_one.single[m] = per_call(lambda r, model=model: model.score_many(r.reshape(1, -1)))
    variants += [f32, via_ctypes, numba_loop, union_loop, as_is_loop, batch_one]
    return variants


def timer_overhead() -> int:
    ns = []
    for _ in range(20_000):
        t0 = time.perf_counter_ns()
        ns.append(time.perf_counter_ns() - t0)
    return int(np.median(ns))


def pin_to_one_cpu() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})
    return cpu


# ------------------------------------------------------------------------------ reporting


def summarise(
    variants: list[Variant],
    models: dict[str, Path],
    seconds: dict[str, dict[str, list[float]]],
    latency: dict[str, dict[str, list[int]]],
    max_diff: dict[str, dict[str, float | None]],
    timer_ns: int,
    ll: Lleaves | None,
    cpu: int | None,
    rounds: int,
) -> dict[str, Any]:
    rows_per_s: dict[str, dict[str, float | None]] = {}
    for v in variants:
        rows_per_s[v.label] = {}
        for m in models:
            s = seconds[v.label][m]
            rows_per_s[v.label][m] = BATCH_ROWS / float(np.median(s)) if s else None
    lleaves_label = next((v.label for v in variants if v.group == "lleaves"), None)
    single: dict[str, dict[str, dict[str, float] | None]] = {}
    for v in variants:
        single[v.label] = {}
        for m in models:
            ns = latency[v.label][m]
            single[v.label][m] = (
                {
                    "median_us": float(np.median(ns)) / 1e3,
                    "p99_us": percentile(ns, 99) / 1e3,
                    "calls": len(ns),
                }
                if ns
                else None
            )
    default = rows_per_s[DEFAULT]
    targets: dict[str, Any] = {
        "score_one_median_small_us": single[DEFAULT]["small"]["median_us"]  # type: ignore[index]
        if single[DEFAULT]["small"]
        else None,
    }
    targets["score_one_median_small_met"] = (
        targets["score_one_median_small_us"] is not None
        and targets["score_one_median_small_us"] <= 10.0
    )
    if lleaves_label:
        for m in models:
            ratio = (default[m] or 0) / (rows_per_s[lleaves_label][m] or float("inf"))
            targets[f"batch_vs_lleaves_{m}"] = ratio
            targets[f"batch_vs_lleaves_{m}_met"] = ratio >= 0.8
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(cpu),
        "versions": versions(ll),
        "settings": {
            "batch_rows": BATCH_ROWS,
            "rounds": rounds,
            "single_row_pool": 1000,
            "timer_overhead_ns": timer_ns,
            "models": {m: {**MODELS[m], "features": NUM_FEATURES} for m in models},
        },
        "lleaves_compile_seconds": ll.hello.get("compile_seconds") if ll else None,
        "variants": [
            {
                "label": v.label,
                "group": v.group,
                "note": v.note,
                "rows_per_s": rows_per_s[v.label],
                "batch_seconds": seconds[v.label],
                "single_row": single[v.label],
                "max_abs_diff_vs_lightgbm": max_diff[v.label],
                "build": {
                    m: {
                        k: b.get(k)
                        for k in ("build_seconds", "cflags", "units", "rewrite", "block_rows")
                    }
                    for m, b in v.build.items()
                    if b
                },
            }
            for v in variants
        ],
        "targets": targets,
    }


def machine_info(cpu: int | None) -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "pinned_cpu": cpu,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "compiler": compiler_identity(),
    }


def versions(ll: Lleaves | None) -> dict[str, str]:
    out = {p: package_version(p) for p in ("lightgbm", "treelite", "tl2cgen", "numba", "numpy")}
    if ll is not None:
        out.update({f"lleaves-venv {k}": v for k, v in ll.hello.get("versions", {}).items()})
    return out


def fmt_rate(v: float | None) -> str:
    return f"{v:,.0f}" if v else "–"


def write_results(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_inference.json").write_text(json.dumps(report, indent=2) + "\n")
    md = render_markdown(report)
    (out / "model_inference.md").write_text(md)
    plot(report, out / "model_inference.png")
    print(md)
    print(f"wrote {out / 'model_inference.json'}, .md, .png")


def render_markdown(report: dict[str, Any]) -> str:
    variants = report["variants"]
    ll = next((v for v in variants if v["group"] == "lleaves"), None)
    mach = report["machine"]
    lines = [
        "# Model inference benchmark",
        "",
        f"Generated {report['generated_at']} by `benchmarks/model_inference.py` on "
        f"{mach['cpu']} ({mach['logical_cpus']} logical CPUs, pinned to CPU "
        f"{mach['pinned_cpu']}, load average at the end "
        f"{', '.join(f'{x:.2f}' for x in mach['load_average'])}), {mach['compiler']}.",
        f"Models: 30 features; small = 200 trees × 31 leaves, large = 1000 trees × 63 leaves. "
        f"Batch: {report['settings']['batch_rows']:,} rows, median of "
        f"{report['settings']['rounds']} interleaved rounds, one thread.",
        "",
        "## Batch throughput (rows/s, higher is better)",
        "",
        "| variant | small | × lleaves | large | × lleaves "
        "| max abs diff vs LightGBM | build s (small / large) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        r = v["rows_per_s"]
        if not any(r.values()):
            continue
        ratio = {
            m: (
                f"{r[m] / ll['rows_per_s'][m]:.2f}"
                if ll and r.get(m) and ll["rows_per_s"][m]
                else "–"
            )
            for m in ("small", "large")
        }
        diff = v["max_abs_diff_vs_lightgbm"]
        diff_s = " / ".join(
            "–" if diff.get(m) is None else f"{diff[m]:.1e}" for m in ("small", "large")
        )
        build = v["build"]
        build_s = (
            " / ".join(f"{build[m]['build_seconds']:.1f}" for m in ("small", "large") if m in build)
            or ""
        )
        lines.append(
            f"| {v['label']} | {fmt_rate(r.get('small'))} | {ratio['small']} | "
            f"{fmt_rate(r.get('large'))} | {ratio['large']} | {diff_s} | {build_s} |"
        )
    lines += [
        "",
        "## Single-row latency (µs per call, lower is better)",
        "",
        f"Per-call wall time including the Python call; the timer itself costs "
        f"{report['settings']['timer_overhead_ns']} ns. Calls cycle through 1 000 different rows.",
        "",
        "| variant | small median | small p99 | large median | large p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for v in variants:
        s = v["single_row"]
        if not any(s.values()):
            continue
        cells = []
        for m in ("small", "large"):
            cells += (
                [f"{s[m]['median_us']:.2f}", f"{s[m]['p99_us']:.2f}"] if s.get(m) else ["–", "–"]
            )
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    t = report["targets"]
    lines += ["", "## Targets", ""]
    for m in ("small", "large"):
        if f"batch_vs_lleaves_{m}" in t:
            ok = "met" if t[f"batch_vs_lleaves_{m}_met"] else "**missed**"
            lines.append(
                f"- compiled batch throughput ≥ 0.8 × lleaves on the {m} model: "
                f"{t[f'batch_vs_lleaves_{m}']:.2f} × — {ok}"
            )
    if t.get("score_one_median_small_us") is not None:
        ok = "met" if t["score_one_median_small_met"] else "**missed**"
        lines.append(
            f"- `score_one` median ≤ 10 µs on the small model: "
            f"{t['score_one_median_small_us']:.2f} µs — {ok}"
        )
    notes = [v for v in variants if v["note"]]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {v['label']}: {v['note']}" for v in notes]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in report["variants"] if any(v["rows_per_s"].values())]
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.45 * len(variants) + 2.5))
    labels = [v["label"] for v in variants]
    y = np.arange(len(variants))
    for k, (m, colour) in enumerate((("small", "#4c72b0"), ("large", "#dd8452"))):
        values = [v["rows_per_s"].get(m) or 0 for v in variants]
        axes[0].barh(y + (k - 0.5) * 0.4, values, height=0.4, color=colour, label=m)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xscale("log")
    axes[0].set_xlabel("rows/s on 10k-row batches (log scale, higher is better)")
    axes[0].legend()
    axes[0].grid(axis="x", alpha=0.3)

    singles = [v for v in report["variants"] if v["single_row"].get("small")]
    y2 = np.arange(len(singles))
    for k, (m, colour) in enumerate((("small", "#4c72b0"), ("large", "#dd8452"))):
        values = [(v["single_row"].get(m) or {}).get("median_us", 0) for v in singles]
        axes[1].barh(y2 + (k - 0.5) * 0.4, values, height=0.4, color=colour, label=m)
    axes[1].set_yticks(y2, [v["label"] for v in singles], fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xscale("log")
    axes[1].axvline(10, color="grey", linestyle="--", linewidth=1, label="10 µs target")
    axes[1].set_xlabel("µs per single-row call, median (log scale, lower is better)")
    axes[1].legend()
    axes[1].grid(axis="x", alpha=0.3)
    fig.suptitle(
        "Model inference, one thread: LightGBM vs GTIL vs compiled (scoring.compiled) vs lleaves"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    typer.run(main)
