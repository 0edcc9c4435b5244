"""The benchmark report writer (fraudstream/bench/report.py) on small synthetic program results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fraudstream.bench import plan, report

HEADER = {
    "generated_at": "2026-11-22T12:00:00+00:00",
    "machine": {
        "cpu": "Test CPU 9000",
        "cores": 2,
        "memory_gib": 7.5,
        "load_average": [1.5, 1.25, 1.0],
        "system": "Linux test x86_64",
    },
    "versions": {
        "python": "3.11.9",
        "lightgbm": "4.7.0",
        "treelite": "4.8.1",
        "tl2cgen": "1.0.0",
        "numba": "0.61.0",
        "numpy": "2.2.0",
        "pyarrow": "20.0.0",
        "confluent-kafka": "2.11.0",
        "librdkafka": "2.11.0",
        "kafka": "3.9.2 (local KRaft broker from jars)",
    },
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
}


def _programs() -> dict[str, dict[str, Any]]:
    pct = {"p50": 10.0, "p90": 20.0, "p99": 40.0, "p99.9": 60.0, "max": 80.0}
    return {
        "api_load": {
            "runs": [
                {"target": "bare", "label": "bare FastAPI", "rate_offered": 200.0,
                 "rate_achieved": 199.0, "latency_ms": pct, "error_rate": 0.0,
                 "degraded_share": 0.0, "latency_sample": [1.0, 2.0, 3.0],
                 "cpu_cores": {"bare": 0.1}},
                {"target": "api", "label": "API, 50 ms deadline", "rate_offered": 200.0,
                 "rate_achieved": 198.0, "latency_ms": pct, "error_rate": 0.01,
                 "degraded_share": 0.05, "latency_sample": [20.0, 30.0, 45.0],
                 "cpu_cores": {"api": 0.3, "worker": 0.2, "broker": 0.5, "generator": 0.1}},
            ]
        },
        "stream_throughput": {
            "drain": [
                {"engine": "confluent, path reasons", "production": True, "reasons": "path",
                 "transactions": 1000, "decided": 1000, "finished": True,
                 "sustained_per_second": 5000.0, "overall_per_second": 4000.0,
                 "cpu_us_per_transaction": 50.0, "wall_seconds": 0.25,
                 "stage_us_per_transaction": {"decode": 10.0, "features": 5.0, "model": 8.0},
                 "loop_cpu_us_per_transaction": 40.0,
                 "curve": [[0.0, 0], [0.5, 400], [1.0, 1000]]},
            ],
            "live": [
                {"reasons": "path", "rate_target": 1000.0, "rate_achieved": 990.0,
                 "computed_ms": pct, "visible_ms": pct, "visible_sample": [50.0, 70.0, 90.0],
                 "warmup": {"seconds": 2.0, "transactions": 1980, "computed_max_ms": 230.0,
                            "visible_max_ms": 520.0}},
            ],
        },
        "model_inference": {
            "settings": {"batch_rows": 10000, "rounds": 5,
                         "models": {"small": {"trees": 200, "leaves": 31, "features": 30}}},
            "variants": [
                {"label": "LightGBM predict (num_threads=1)", "rows_per_s": {"small": 1e5},
                 "single_row": {"small": {"median_us": 33.0, "p99_us": 90.0}},
                 "max_abs_diff_vs_lightgbm": {"small": 0.0}},
                {"label": "compiled: default", "rows_per_s": {"small": 7e5},
                 "single_row": {"small": {"median_us": 2.5, "p99_us": 4.0}},
                 "max_abs_diff_vs_lightgbm": {"small": 0.0}},
            ],
        },
        "feature_engine": {"source": "simulated", "transactions": 5000,
                           "offline_replay_tx_per_s": 5e5, "engine_process_tx_per_s": 6e5,
                           "numba_prefix_tx_per_s": 2e5, "python_twin_tx_per_s": 1e4,
                           "numba_over_twin": 20.0},
        "incremental_training": {
            "accuracy": {
                "simulation": {"days": 30, "cards": 500, "new_typology": "bin_attack",
                               "new_typology_day": 20},
                "days": [
                    {"day": d, "date": f"2026-01-{d:02d}", "frauds": 5,
                     "new_typology_frauds": 3 if d >= 20 else 0, "frozen_ap": 0.5,
                     "incremental_ap": 0.5 + (0.3 if d >= 24 else 0.0), "champion": "v1"}
                    for d in range(15, 30)
                ],
            },
            "recovery": {"lead": 0.1, "recovery_days": 4,
                         "frozen": {"ap_7_days_before": 0.5, "ap_attack_days": 0.5,
                                    "ap_all_days_after": 0.5},
                         "incremental": {"ap_7_days_before": 0.5, "ap_attack_days": 0.7,
                                         "ap_all_days_after": 0.7}},
        },
        "decision_cost": {
            "source": "log transactions.parquet + labels.parquet", "split": "2026-01-15T00:00:00",
            "scored": 2000, "frauds": 20, "cpu_second_usd": 0.00001,
            "cpu_us_per_transaction_offline": 30.0,
            "policy": {"review_cost": 5.0, "review_miss_rate": 0.1, "friction_share": 0.02},
            "evaluation": {"auc_roc": 0.9, "average_precision": 0.6},
            "cost_per_million": {"missed_fraud": 1000.0, "reviews": 500.0, "friction": 50.0,
                                 "total": 1550.0, "approve_all": 9000.0,
                                 "expected_fraud_loss_ex_ante": 1100.0,
                                 "compute_offline": 0.3},
            "per_day": [{"date": "2026-01-15", "transactions": 1000, "frauds": 10,
                         "average_precision": 0.6, "cost_per_transaction": 0.001},
                        {"date": "2026-01-16", "transactions": 1000, "frauds": 0,
                         "average_precision": None, "cost_per_transaction": 0.0}],
        },
    }  # fmt: skip


def _steps(status: dict[str, str] | None = None) -> list[dict[str, Any]]:
    status = status or {}
    return [
        {"name": name, "status": status.get(name, "ok"), "data": "synthetic", "seconds": 1.0,
         "command": f"python benchmarks/{name}.py", "log": f"logs/{name}.log",
         "reason": None if status.get(name, "ok") == "ok" else "exit status; end of its log:\nboom"}
        for name in plan.STEP_NAMES
    ]  # fmt: skip


def _inputs(programs: dict[str, dict[str, Any]], **kwargs: Any) -> report.Inputs:
    return report.Inputs(
        header=HEADER,
        profile="short",
        source="simulated data",
        steps=kwargs.pop("steps", _steps()),
        programs=programs,
        **kwargs,
    )


def test_every_section_and_header_field_is_rendered(tmp_path: Path) -> None:
    sections = report.write(_inputs(_programs()), tmp_path)
    text = (tmp_path / "report.md").read_text()
    for title in report.SECTION_TITLES:
        assert f"## {title}" in text
    for field in ("Test CPU 9000", "2 cores", "7.5 GiB", "1.50, 1.25, 1.00", "3.11.9", "4.7.0",
                  "4.8.1", "1.0.0", "3.9.2", "librdkafka", "2.11.0",
                  "0123456789abcdef0123456789abcdef01234567", "dirty"):  # fmt: skip
        assert field in text, field
    by_key = {s.key: s for s in sections}
    for key in ("latency", "throughput", "stages", "engines", "features", "accuracy", "cost"):
        assert by_key[key].status == "ok", (key, by_key[key].missing)
    for png in ("latency_cdf", "throughput", "stages", "engines", "accuracy", "cost"):
        assert (tmp_path / f"{png}.png").stat().st_size > 1000
        assert f"({png}.png)" in text


def test_numbers_come_from_the_programs(tmp_path: Path) -> None:
    report.write(_inputs(_programs()), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    sections = results["sections"]
    assert results["git"]["dirty"] is True
    assert results["machine"]["cpu"] == "Test CPU 9000"
    compute = sections["cost"]["data"]["compute"]
    # stream worker: 50 CPU-µs per transaction x $0.00001 per CPU-second = $0.0005 per million
    assert compute["stream worker (path reasons)"]["usd_per_million"] == pytest.approx(0.0005)
    # API path: (0.3 + 0.2 + 0.5) cores at 198/s answered
    api = next(v for k, v in compute.items() if k.startswith("API request"))
    assert api["cpu_us_per_transaction"] == pytest.approx(1.0 / 198 * 1e6)
    assert sections["cost"]["data"]["decisions"]["per_million"]["total"] == 1550.0
    assert sections["stages"]["data"]["runs"][0]["stage_us_per_transaction"]["model"] == 8.0
    assert sections["accuracy"]["data"]["incremental"]["recovery_days"] == 4
    text = (tmp_path / "report.md").read_text()
    assert "| stream worker (path reasons) | 50.0 | 0.0005 |" in text
    assert "**1,550**" in text
    # the live run's percentiles say they leave its warm-up out
    assert "Kafka timestamp → decision computed, after a 2 s warm-up" in text


def test_a_missing_program_is_said_not_dropped(tmp_path: Path) -> None:
    programs = _programs()
    del programs["stream_throughput"]
    del programs["incremental_training"]
    steps = _steps({"stream_throughput": "failed", "incremental_training": "skipped"})
    sections = {s.key: s for s in report.write(_inputs(programs, steps=steps), tmp_path)}
    text = (tmp_path / "report.md").read_text()
    assert sections["stages"].status == "not measured"
    assert sections["latency"].status == "partial"  # the API half is there
    assert "*Not measured:* stream_throughput: failed — exit status" in text
    assert "incremental_training: skipped" in text
    assert "boom" in text  # the end of the failed program's log is quoted
    assert not (tmp_path / "stages.png").exists()
    for title in report.SECTION_TITLES:
        assert f"## {title}" in text


def test_reliability_files_are_read_when_present(tmp_path: Path) -> None:
    reliability = {"chaos_long.json": {"decisions_lost": 0, "duplicates": 0,
                                       "kills": {"worker": 12, "broker": 3}}}  # fmt: skip
    sections = {
        s.key: s for s in report.write(_inputs(_programs(), reliability=reliability), tmp_path)
    }
    text = (tmp_path / "report.md").read_text()
    assert "decisions_lost: 0" in text and "kills.worker: 12" in text
    assert "`state_memory.json`: not present." in text
    assert sections["reliability"].status == "partial"


def test_short_plan_names_every_program_and_reads_the_log(tmp_path: Path) -> None:
    log = plan.LogInput(tmp_path / "tx.parquet", tmp_path / "labels.parquet")
    steps = {s.name: s for s in plan.build("short", programs_out=tmp_path, log=log)}
    assert set(steps) == set(plan.STEP_NAMES)
    assert "--transactions" in steps["feature_engine"].args
    assert "--log-transactions" in steps["stream_throughput"].args
    assert steps["accuracy_prequential"].skip  # full profile only
    unlabelled = {
        s.name: s
        for s in plan.build("short", programs_out=tmp_path, log=plan.LogInput(log.transactions))
    }
    assert unlabelled["decision_cost"].skip and "labels" in unlabelled["decision_cost"].skip
    with pytest.raises(ValueError, match="unknown steps"):
        plan.build("short", programs_out=tmp_path, only=("nope",))


def test_incremental_on_a_log_says_there_is_no_recovery(tmp_path: Path) -> None:
    programs = _programs()
    accuracy = programs["incremental_training"]["accuracy"]
    accuracy["simulation"] = {"source": "log t.parquet + l.parquet", "days": 30, "cards": 800,
                              "new_typology": None, "new_typology_day": None}  # fmt: skip
    programs["incremental_training"]["recovery"] = {
        "lead": 0.1, "recovery_days": None,
        "frozen": {"ap_all_days_after": 0.41}, "incremental": {"ap_all_days_after": 0.47},
    }  # fmt: skip
    sections = {s.key: s for s in report.write(_inputs(programs), tmp_path)}
    text = (tmp_path / "report.md").read_text()
    assert sections["accuracy"].status == "ok"
    assert "On log t.parquet + l.parquet: its first 30 days" in text
    assert "frozen 0.410, incremental 0.470" in text
    assert "no recovery is measured" in text and "Recovery (incremental" not in text
