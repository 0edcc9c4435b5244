"""The bench runner's verdicts on tiny stand-in programs: ok, failed, no JSON, timeout, moved."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fraudstream.bench.plan import Step
from fraudstream.bench.runner import run

PROGRAM = """
import json, sys, time
from pathlib import Path
mode, out = sys.argv[1], Path(sys.argv[2])
print("working on", mode, flush=True)
if mode == "ok":
    out.mkdir(parents=True, exist_ok=True)
    (out / "prog.json").write_text(json.dumps({"value": 1}))
elif mode == "results":  # like api_load.py: only into benchmarks/results/<name>.*
    (Path(__file__).parent / "results" / "run-x.json").write_text(json.dumps({"value": 2}))
    (Path(__file__).parent / "results" / "run-x.md").write_text("# x")
elif mode == "fail":
    print("Traceback: something broke", flush=True)
    sys.exit(3)
elif mode == "sleep":
    time.sleep(60)
"""


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    bench = tmp_path / "checkout" / "benchmarks"
    (bench / "results").mkdir(parents=True)
    (bench / "prog.py").write_text(PROGRAM)
    report = tmp_path / "report"
    return bench, report, report / "programs"


def _step(mode: str, programs: Path, **kwargs: object) -> Step:
    return Step("prog", "prog.py", (mode, str(programs)), "synthetic", **kwargs)  # type: ignore[arg-type]


def test_ok_and_the_command_as_typed(tmp_path: Path) -> None:
    bench, report, programs = _setup(tmp_path)
    result = run(_step("ok", programs, timeout_s=60), benchmarks=bench, report_dir=report,
                 programs_out=programs)  # fmt: skip
    assert result.status == "ok" and result.reason is None
    assert result.command.startswith("python benchmarks/prog.py ok ")
    assert "working on ok" in (report / result.log).read_text()  # type: ignore[operator]


def test_failure_quotes_the_end_of_the_log(tmp_path: Path) -> None:
    bench, report, programs = _setup(tmp_path)
    result = run(_step("fail", programs, timeout_s=60), benchmarks=bench, report_dir=report,
                 programs_out=programs)  # fmt: skip
    assert result.status == "failed"
    assert result.reason is not None and "Traceback: something broke" in result.reason


def test_exit_zero_without_json_is_a_failure(tmp_path: Path) -> None:
    bench, report, programs = _setup(tmp_path)
    result = run(_step("quiet", programs, timeout_s=60), benchmarks=bench, report_dir=report,
                 programs_out=programs)  # fmt: skip
    assert result.status == "failed" and "wrote no prog.json" in (result.reason or "")


def test_timeout_ends_the_program(tmp_path: Path) -> None:
    bench, report, programs = _setup(tmp_path)
    began = time.monotonic()
    result = run(_step("sleep", programs, timeout_s=2), benchmarks=bench, report_dir=report,
                 programs_out=programs)  # fmt: skip
    assert result.status == "timeout"
    assert time.monotonic() - began < 30


def test_results_written_elsewhere_are_moved(tmp_path: Path) -> None:
    bench, report, programs = _setup(tmp_path)
    step = _step("results", programs, timeout_s=60, writes_to_results_as="run-x")
    result = run(step, benchmarks=bench, report_dir=report, programs_out=programs)
    assert result.status == "ok"
    assert json.loads((programs / "prog.json").read_text()) == {"value": 2}
    assert (programs / "prog.md").exists()
    assert not list((bench / "results").iterdir())


def test_skipped_steps_do_not_run(tmp_path: Path) -> None:
    bench, report, programs = _setup(tmp_path)
    result = run(_step("ok", programs, timeout_s=60, skip="full profile only"), benchmarks=bench,
                 report_dir=report, programs_out=programs)  # fmt: skip
    assert result.status == "skipped" and result.reason == "full profile only"
    assert not programs.exists()
