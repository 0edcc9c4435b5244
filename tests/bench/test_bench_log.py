"""fraudstream bench on a converted log: a Sparkov-layout file → convert → the short profile's
programs that read a log and need no broker (feature engine, decisions and their cost, incremental
training), end to end through the command line; every section of the report is there, measured
or saying why not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fraudstream.bench.report import SECTION_TITLES
from tests.bench.sparkov_layout import write_sparkov_csv

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-tokenization-key-0123456789abcdefghijklmnop"


@pytest.mark.slow
def test_short_report_from_a_converted_sparkov_log(tmp_path: Path) -> None:
    env = {**os.environ, "FRAUD_API__TOKENIZATION_KEY": KEY}
    raw = tmp_path / "fraudTrain.csv"
    # 45 days: with the mapping's 14-day report delay, frauds of the first week are known by
    # the middle of the log, where decision_cost splits training from decisions
    write_sparkov_csv(raw, cards=300, days=45, seed=8)
    tx, lb = tmp_path / "log" / "transactions.parquet", tmp_path / "log" / "labels.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", "convert", "--input", str(raw),
         "--map", str(ROOT / "docs/mappings/sparkov.toml"), "--transactions", str(tx),
         "--labels", str(lb)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", "bench", "--profile", "short",
         "--only", "feature_engine,decision_cost,incremental_training", "--transactions", str(tx),
         "--labels", str(lb),
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = (out / "report.md").read_text()
    for title in SECTION_TITLES:
        assert f"## {title}" in text, title
    assert f"the given log: {tx}" in text
    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    assert sections["features"]["status"] == "ok"
    assert sections["features"]["data"]["transactions"] > 10_000
    decisions = sections["cost"]["data"]["decisions"]
    assert decisions["source"].startswith("log transactions.parquet")
    assert decisions["scored"] > 0 and decisions["frauds"] > 0
    assert decisions["per_million"]["total"] > 0
    accuracy = sections["accuracy"]["data"]["incremental"]
    assert len(accuracy["days"]) > 0 and accuracy["typology_day"] is None
    assert "On log transactions.parquet + labels.parquet: its first 30 days" in text
    # the programs that did not run are named with the reason, not dropped
    assert sections["stages"]["status"] == "not measured"
    assert "stream_throughput: skipped — not selected (--only)" in text
    assert "api_load: skipped" in text
    for png in ("cost.png", "accuracy.png"):
        assert (out / png).stat().st_size > 1000
    steps = {s["name"]: s for s in results["steps"]}
    assert steps["feature_engine"]["status"] == "ok"
    assert "--transactions" in steps["decision_cost"]["command"]
    assert results["git"]["commit"] and results["machine"]["cores"]
