"""Schemathesis at depth: the API's OpenAPI schema against the real app, ≥ 10,000 cases.

Runs tests/api/test_schemathesis.py (the real app on a real broker, tokenization on, every
schemathesis check, positive and negative data) in its long profile — ~1,000 examples per
operation and phase instead of 90 — and records what happened: cases per operation and status,
failed checks (failed test items: schemathesis stops an operation at its first failure and shrinks
it), server errors. Writes benchmarks/results/api_fuzz.{json,md,png}.

    nice -n 10 .venv/bin/python benchmarks/api_fuzz.py            # ~45 min on 2 shared cores

This is a fuzzing run, not a performance measurement; the wall time is recorded for planning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TEST = "tests/api/test_schemathesis.py"


def run(profile: str, out: Path) -> dict[str, Any]:
    """Run the schemathesis test file in ``profile``; the tally, the failures and the time."""
    with tempfile.TemporaryDirectory() as tmp:
        tally_path, junit = Path(tmp) / "tally.json", Path(tmp) / "junit.xml"
        env = {**os.environ, "FRAUD_FUZZ_PROFILE": profile, "FRAUD_FUZZ_REPORT": str(tally_path)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider",
             f"--junitxml={junit}", "-o", "timeout=0"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.monotonic() - started
        (out.parent / f"{out.name}.pytest.log").write_text(done.stdout + done.stderr)
        if not tally_path.exists():
            raise SystemExit(f"no tally written (pytest exit {done.returncode}):\n{done.stdout}")
        tally = json.loads(tally_path.read_text())
        failures = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            for problem in (*case.findall("failure"), *case.findall("error")):
                failures.append(
                    {"test": case.get("name"), "message": (problem.get("message") or "")[:2000]}
                )
    rows = tally["tally"]
    return {
        "profile": profile,
        "max_examples_per_operation_and_phase": tally["max_examples"],
        "cases": sum(r["cases"] for r in rows),
        "server_errors": sum(r["cases"] for r in rows if r["status"] >= 500),
        "failed_tests": failures,
        "pytest_exit": done.returncode,
        "seconds": round(seconds, 1),
        "by_operation_and_status": sorted(rows, key=lambda r: (r["operation"], r["status"])),
    }


def write_markdown(result: dict[str, Any], path: Path) -> None:
    by_op: dict[str, dict[int, int]] = defaultdict(dict)
    for r in result["by_operation_and_status"]:
        by_op[r["operation"]][r["status"]] = r["cases"]
    statuses = sorted({s for counts in by_op.values() for s in counts})
    lines = [
        "# API fuzzing (schemathesis, long profile)",
        "",
        f"Run {result['run_at']} on {result['machine']}: **{result['cases']:,} cases**, "
        f"**{result['server_errors']} server errors**, {len(result['failed_tests'])} failed "
        f"checks, {result['seconds'] / 60:.0f} min. Every schemathesis check, positive and "
        "negative data, tokenization on, the real app on a real broker without a worker "
        "(every decision is the fallback's).",
        "",
        "| operation | " + " | ".join(str(s) for s in statuses) + " | cases |",
        "|---|" + "---:|" * (len(statuses) + 1),
    ]
    for op, counts in sorted(by_op.items()):
        cells = " | ".join(f"{counts.get(s, 0):,}" for s in statuses)
        lines.append(f"| `{op}` | {cells} | {sum(counts.values()):,} |")
    lines.append("")
    for failure in result["failed_tests"]:
        lines += [f"* failed: `{failure['test']}`: {failure['message'][:300]}"]
    lines.append("Command: `nice -n 10 .venv/bin/python benchmarks/api_fuzz.py`")
    path.write_text("\n".join(lines) + "\n")


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_op: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in result["by_operation_and_status"]:
        by_op[r["operation"]][f"{r['status'] // 100}xx"] += r["cases"]
    ops = sorted(by_op)
    classes = sorted({c for counts in by_op.values() for c in counts})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    left = [0] * len(ops)
    for cls in classes:
        widths = [by_op[op].get(cls, 0) for op in ops]
        ax.barh(ops, widths, left=left, label=cls)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("cases")
    ax.set_title(
        f"schemathesis long profile: {result['cases']:,} cases, "
        f"{result['server_errors']} server errors"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(
    profile: Annotated[str, typer.Option(help="long (≥ 10,000 cases) or ci (≥ 1,000).")] = "long",
    name: Annotated[str, typer.Option(help="Base name of the result files.")] = "api_fuzz",
) -> None:
    """Run schemathesis in the long profile and write benchmarks/results/<name>.{json,md,png}."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = run(profile, RESULTS / name)
    result["run_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"] = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, RESULTS / f"{name}.md")
    write_plot(result, RESULTS / f"{name}.png")
    print((RESULTS / f"{name}.md").read_text())
    if result["server_errors"] or result["failed_tests"] or result["pytest_exit"]:
        raise SystemExit(1)


if __name__ == "__main__":
    typer.run(main)
