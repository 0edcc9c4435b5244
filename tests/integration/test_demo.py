"""The README's main job, `fraudstream demo`, end to end against the real broker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_runs_the_pipeline_and_prints_its_summary(
    kafka_env: dict[str, str], topic_prefix: str, tmp_path: Path
) -> None:
    env = {**kafka_env, "FRAUD_KAFKA__TOPIC_PREFIX": topic_prefix, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "demo", "--workdir", str(tmp_path),
         "--days", "21", "--cards", "1500"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stderr
    for line in (
        "fraudstream demo",
        "AUC ROC / AP",
        "stream decisions",
        "online vs offline (last week)",
        "elapsed",
    ):
        assert line in summary
    every_one_once = r"stream decisions\s*│\s*([\d,]+) of \1 transactions decided, 0 twice"
    assert re.search(every_one_once, summary)
    delta = re.search(r"max \|Δ score\| = (\S+) over", summary)
    assert delta and float(delta.group(1)) <= 1e-9  # the worker agrees with score-log
    assert (tmp_path / "scores.parquet").exists()
    assert any((tmp_path / "registry" / "versions").iterdir())
