"""Every step of both profiles (simulated and on a log) parses with its program's own options: a
flag renamed in a benchmark program breaks this test, not a 1.5-hour run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer

from fraudstream.bench import plan

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LOG = plan.LogInput(Path("/logs/transactions.parquet"), Path("/logs/labels.parquet"))


def _program(file: str) -> ModuleType:
    name = f"bench_program_{file.removesuffix('.py')}"
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCHMARKS) not in sys.path:  # the programs import each other as scripts
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("profile", plan.PROFILES)
@pytest.mark.parametrize("log", [None, LOG], ids=["simulated", "log"])
def test_every_step_parses_with_its_program(
    profile: plan.Profile, log: plan.LogInput | None
) -> None:
    for step in plan.build(profile, programs_out=Path("/tmp/report/programs"), log=log):
        app = typer.Typer()
        app.command()(_program(step.program).main)
        command = typer.main.get_command(app)
        context = command.make_context(step.program, list(step.args))  # raises on a bad flag
        params = context.params
        if "out" in params:
            assert str(params["out"]) == "/tmp/report/programs", step.name
        if log is not None and step.name in (
            "feature_engine",
            "decision_cost",
            "incremental_training",
        ):
            assert str(params["log_transactions"]) == str(LOG.transactions)
        if log is not None and step.name == "stream_throughput":
            assert str(params["log_labels"]) == str(LOG.labels)
