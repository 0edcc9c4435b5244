"""lleaves side of ``benchmarks/model_inference.py``; runs in ``benchmarks/.venv-lleaves``.

lleaves 1.3 needs llvmlite 0.44, which our numba does not accept, so it lives in its own venv and
this script is its only entry point. It must not import the project.

Protocol (one JSON object per line on stdout, so the parent can interleave rounds with its own
variants and both sides see the same machine noise):

    argv:  --data X.npy --model NAME=model.txt --cache-dir DIR
    stdin: "batch NAME"         -> {"seconds": float}          one predict() of all rows of X
           "single NAME N"      -> {"ns": [int, ...]}          N one-row predict() calls
           "check NAME"         -> {"pred": [float, ...]}      predictions for the first 2000 rows
           "quit"
    first line out: {"ready": true, "compile_seconds": {...}, "versions": {...}}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import lleaves
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=path")
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args()

    X = np.load(args.data)
    models: dict[str, lleaves.Model] = {}
    compile_seconds: dict[str, float] = {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = lleaves.Model(model_file=path)
        cache = Path(args.cache_dir) / f"{name}-{Path(path).stat().st_mtime_ns}.o"
        started = time.perf_counter()
        # Defaults on purpose: lleaves compiles for the host CPU (its default target_cpu) with
        # cache blocking of 34 trees; that is how lleaves is used.
        model.compile(cache=str(cache))
        compile_seconds[name] = time.perf_counter() - started
        models[name] = model
    emit(
        {
            "ready": True,
            "compile_seconds": compile_seconds,
            "versions": {p: version(p) for p in ("lleaves", "llvmlite", "numpy", "lightgbm")},
        }
    )
    rows = [np.ascontiguousarray(X[i : i + 1]) for i in range(min(len(X), 1000))]
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        model = models[cmd[1]]
        if cmd[0] == "batch":
            started = time.perf_counter()
            model.predict(X, n_jobs=1)
            emit({"seconds": time.perf_counter() - started})
        elif cmd[0] == "single":
            n = int(cmd[2])
            ns = []
            for i in range(n):
                row = rows[i % len(rows)]
                t0 = time.perf_counter_ns()
                model.predict(row, n_jobs=1)
                ns.append(time.perf_counter_ns() - t0)
            emit({"ns": ns})
        elif cmd[0] == "check":
            emit({"pred": model.predict(X[:2000], n_jobs=1).tolist()})


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
