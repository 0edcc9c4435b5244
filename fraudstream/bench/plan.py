"""The profiles of ``fraudstream bench``: which benchmark programs run, with which flags, on what.

Short: every program at a size that fits in a few minutes on a loaded 2-core machine (the sizes
are written next to each step; each program's own quick mode where it has one). Full: the
programs' own defaults, the sizes quoted in benchmarks/README.md (about 1.5 hours).

Data: with ``--transactions/--labels`` the programs that can read a log read it (feature engine,
decision cost, stream worker, incremental training — without a recovery figure, since a log has
no known typology start); the others say in the report what they ran on instead: the model
inference benchmark uses synthetic models by design (engines compared on the same trees), the API
load program needs the simulator's world (its banks and their API keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Profile = Literal["short", "full"]
PROFILES: tuple[Profile, ...] = ("short", "full")


@dataclass(frozen=True)
class LogInput:
    """A transactions log and (optionally) its labels in the documented format (docs/scoring.md)."""

    transactions: Path
    labels: Path | None = None


@dataclass(frozen=True)
class Step:
    name: str  # also the stem of the JSON the program writes
    program: str  # file in benchmarks/
    args: tuple[str, ...]
    data: str  # what it ran on, said in the report
    timeout_s: float
    skip: str | None = None  # why it does not run (said in the report)
    # api_load.py writes only into benchmarks/results/<name>.*: the runner moves the files.
    writes_to_results_as: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv(self, python: str, benchmarks: Path) -> list[str]:
        return [python, str(benchmarks / self.program), *self.args]


STEP_NAMES = (
    "model_inference",
    "feature_engine",
    "decision_cost",
    "stream_throughput",
    "api_load",
    "incremental_training",
    "accuracy_prequential",
)


def build(
    profile: Profile,
    *,
    programs_out: Path,
    log: LogInput | None = None,
    only: tuple[str, ...] | None = None,
    run_id: str = "bench",
) -> list[Step]:
    """The steps of ``profile``; steps outside ``only`` are kept with a skip reason so the report
    still names them."""
    out = ("--out", str(programs_out))
    short = profile == "short"
    log_args: tuple[str, ...] = ()
    stream_log_args: tuple[str, ...] = ()
    labelled = log is not None and log.labels is not None
    if log is not None:
        log_args = ("--transactions", str(log.transactions))
        if log.labels is not None:
            log_args += ("--labels", str(log.labels))
            stream_log_args = (
                "--log-transactions",
                str(log.transactions),
                "--log-labels",
                str(log.labels),
            )
    given = f"the given log ({log.transactions.name})" if log else None
    no_labels = "needs labels (--labels): a model is trained on the log and judged against them"

    steps = [
        Step(
            "model_inference",
            "model_inference.py",
            # engines side by side on the small model; the full run adds the large model, lleaves
            # and every build and call-path variant (~20 min on a cold build cache)
            ("--quick", "--models", "small", "--variants", "engines", "--no-lleaves", *out)
            if short
            else out,
            "synthetic models and rows (30 features), by design: the engines on the same trees",
            timeout_s=900 if short else 5400,
        ),
        Step(
            "feature_engine",
            "feature_engine.py",
            (*log_args, "--twin-rows", "5000", *out)
            if log
            else (("--cards", "3000", "--twin-rows", "5000", *out) if short else out),
            given
            or (
                "simulated: 3,000 cards × 30 days" if short else "simulated: 20,000 cards × 30 days"
            ),
            timeout_s=600 if short else 1800,
        ),
        Step(
            "decision_cost",
            "decision_cost.py",
            (*log_args, *out) if log else ((*out,) if short else ("--cards", "20000", *out)),
            given
            or (
                "simulated: 2,000 cards × 30 days" if short else "simulated: 20,000 cards × 30 days"
            ),
            timeout_s=900 if short else 3600,
            skip=no_labels if log and not labelled else None,
        ),
        Step(
            "stream_throughput",
            "stream_throughput.py",
            # short: one 100k drain with path reasons, one 15 s live run at 1,000/s; full: 1M
            # drains of both engines with both reason methods, live at 2,000 and 5,000/s
            (
                *_args(
                    "--transactions 100000 --no-faust --reasons path --rates 1000 --live-seconds 15"
                ),
                *stream_log_args,
                *out,
            )
            if short
            else (*stream_log_args, *out),
            given
            or (
                "simulated month, first 100,000 transactions"
                if short
                else "simulated month, 1,000,000 transactions"
            ),
            timeout_s=900 if short else 7200,
            skip=no_labels + " (the worker needs a champion)" if log and not labelled else None,
        ),
        Step(
            "api_load",
            "api_load.py",
            (
                *_args(
                    "--rates 200 --seconds 10 --warmup 3 --stack-warmup-s 15 --no-long-deadline "
                    "--history-days 0.5"
                ),
                "--name",
                f"{run_id}-api_load",
            )
            if short
            else ("--name", f"{run_id}-api_load"),
            "simulated month of stream_throughput.py (api_load.py has no log input: it sends "
            "each bank's transactions with that bank's API key)",
            timeout_s=900 if short else 3600,
            writes_to_results_as=f"{run_id}-api_load",
        ),
        Step(
            "incremental_training",
            "incremental_training.py",
            _incremental_args(short, log_args if labelled else (), out),
            (
                f"{given}: its first {30 if short else 50} days, the program's default trainer "
                "settings (maturity 7 d); no typology start is known in a log, so no recovery"
            )
            if labelled
            else "simulated, with the bin_attack typology switched on mid-period",
            timeout_s=900 if short else 3600,
            skip=no_labels if log and not labelled else None,
        ),
        Step(
            "accuracy_prequential",
            "accuracy_prequential.py",
            (
                "--days",
                "183",
                "--train-start-day",
                "115",
                "--out-dir",
                str(programs_out),
                "--name",
                "accuracy_prequential",
            ),
            "the fraud-detection handbook's simulator and protocol, beside its baseline",
            timeout_s=3600,
            skip="full profile only (about 5 minutes)" if short else None,
        ),
    ]
    if only is not None:
        unknown = set(only) - set(STEP_NAMES)
        if unknown:
            raise ValueError(f"unknown steps {sorted(unknown)}; known: {', '.join(STEP_NAMES)}")
        steps = [
            s if s.name in only or s.skip else _skipped(s, "not selected (--only)") for s in steps
        ]
    return steps


def _incremental_args(
    short: bool, log_args: tuple[str, ...], out: tuple[str, ...]
) -> tuple[str, ...]:
    if log_args:  # the trainer's default maturity, window and holdout on a real log
        return (*_args("--no-swap --days 30"), *log_args, *out) if short else (*log_args, *out)
    if not short:
        return out
    # short: fraud reports within 3 days and a 2-day holdout, so that a model trained on the new
    # typology can serve 6 days after it starts and recovery fits in 30 simulated days
    return (
        *_args(
            "--no-swap --days 30 --cards 1000 --typology-day 12 --champion-days 6 "
            "--label-delay-days 3 --eval-days 2 --typology-share 0.6"
        ),
        *out,
    )


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _skipped(step: Step, reason: str) -> Step:
    from dataclasses import replace

    return replace(step, skip=reason)
