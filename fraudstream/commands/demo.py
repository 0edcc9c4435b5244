"""``fraudstream demo`` and ``fraudstream up``: the whole stack locally (stack.py does the work).

``demo`` is the README's main job: a short workload, then a summary, every check, and a clean
shutdown; exit 0 only when the checks pass. ``up`` runs the same stack with a workload that keeps
going until Ctrl-C (or SIGTERM), then stops everything it started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RunDirOption = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        "--workdir",
        help="Where everything of the run goes: data, models, worker state, service logs, "
        "processes.json, summary.json (default: runs/<demo|up>-<time>).",
    ),
]
DaysOption = Annotated[int, typer.Option(min=14, help="Simulated days of history (the month).")]
LiveDaysOption = Annotated[
    int,
    typer.Option(min=1, help="Simulated days after the month: the live traffic (looped by up)."),
]
CardsOption = Annotated[int, typer.Option(min=100, help="Simulated cards.")]
SeedOption = Annotated[int, typer.Option(help="Seed of simulation and training.")]
WorkersOption = Annotated[int, typer.Option(min=1, max=8, help="Stream worker processes.")]
RateOption = Annotated[
    float, typer.Option(min=1, help="Transactions per second of the history replay (Kafka).")
]
LiveRateOption = Annotated[
    float, typer.Option(min=1, help="Transactions per second of the live traffic (Kafka + API).")
]
ApiBankOption = Annotated[
    str, typer.Option(help="The bank whose live transactions (and labels) go through the API.")
]
ConcurrencyOption = Annotated[
    int, typer.Option(min=1, max=256, help="Most API requests in flight at once.")
]
DeadlineOption = Annotated[
    float,
    typer.Option(
        min=1,
        help="The API's deadline: slower stream answers become degraded fallback answers. "
        "The default leaves room for the Kafka transaction commit on a small shared machine "
        "(docs/api.md, measured latencies).",
    ),
]
ApiPortOption = Annotated[int | None, typer.Option(help="Port of the API (default: a free one).")]
KeepKafkaOption = Annotated[
    bool, typer.Option(help="Leave the local broker running if this run started it.")
]
StatusEveryOption = Annotated[
    float,
    typer.Option(min=0.5, help="Seconds between status lines when stderr is not a terminal."),
]


def demo(
    run_dir: RunDirOption = None,
    days: DaysOption = 21,
    live_days: LiveDaysOption = 2,
    cards: CardsOption = 2000,
    seed: SeedOption = 7,
    workers: WorkersOption = 1,
    rate: RateOption = 3000.0,
    live_rate: LiveRateOption = 150.0,
    live_transactions: Annotated[
        int, typer.Option(min=1, help="Live transactions to send (all banks) before stopping.")
    ] = 3000,
    api_bank: ApiBankOption = "bank01",
    api_concurrency: ConcurrencyOption = 16,
    api_deadline_ms: DeadlineOption = 200.0,
    api_port: ApiPortOption = None,
    trainer_wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait at the end for the trainer's first round.")
    ] = 240.0,
    keep_kafka: KeepKafkaOption = False,
    status_every: StatusEveryOption = 5.0,
) -> None:
    """The whole stack on a short simulated workload, a summary, every check, a clean shutdown.

    Starts the local Kafka (or uses FRAUD_KAFKA__BOOTSTRAP_SERVERS), creates fresh topics,
    simulates a month of card traffic plus live days, trains and compiles a first model, starts a
    stream worker, the incremental trainer and the API as subprocesses, replays the month into
    Kafka, then sends live traffic through Kafka and (one bank) through the API with delayed
    labels, showing a live view. Checks: every transaction decided exactly once; the month's
    scores equal the offline replay's (max |Δ| = 0); the API's non-degraded answers equal the
    stream's decision records. Exit 0 only when they pass. Every process it starts, it stops.
    """
    from fraudstream.commands.stack import StackOptions, run_stack

    options = StackOptions(
        run_dir=run_dir, days=days, live_days=live_days, cards=cards, seed=seed, workers=workers,
        rate=rate, live_rate=live_rate, live_transactions=live_transactions, api_bank=api_bank,
        api_concurrency=api_concurrency, api_deadline_ms=api_deadline_ms, api_port=api_port,
        keep_kafka=keep_kafka, trainer_wait_s=trainer_wait, status_every=status_every,
    )  # fmt: skip
    code = run_stack(options, "demo")
    if code:
        raise typer.Exit(code)


def up(
    run_dir: RunDirOption = None,
    days: DaysOption = 21,
    live_days: LiveDaysOption = 2,
    cards: CardsOption = 2000,
    seed: SeedOption = 7,
    workers: WorkersOption = 1,
    rate: RateOption = 3000.0,
    live_rate: LiveRateOption = 150.0,
    api_bank: ApiBankOption = "bank01",
    api_concurrency: ConcurrencyOption = 16,
    api_deadline_ms: DeadlineOption = 200.0,
    api_port: ApiPortOption = None,
    keep_kafka: KeepKafkaOption = False,
    status_every: StatusEveryOption = 5.0,
) -> None:
    """The whole stack with a workload that keeps going until Ctrl-C, then a clean shutdown.

    The same as `demo` (broker, topics, first model, worker(s), trainer, API, the month replayed),
    then the live days are looped — shifted in time, transaction ids suffixed -r1, -r2, ... — with
    one bank through the API and delayed labels, while the live view shows throughput, latencies,
    the decision mix, degraded answers, cost per transaction, the model version, consumer lag and
    the trainer's rounds. Ctrl-C (or SIGTERM) stops the workload, every service and the broker it
    started, prints a summary and exits 0.
    """
    from fraudstream.commands.stack import StackOptions, run_stack

    options = StackOptions(
        run_dir=run_dir, days=days, live_days=live_days, cards=cards, seed=seed, workers=workers,
        rate=rate, live_rate=live_rate, live_transactions=None, api_bank=api_bank,
        api_concurrency=api_concurrency, api_deadline_ms=api_deadline_ms, api_port=api_port,
        keep_kafka=keep_kafka, trainer_wait_s=0.0, status_every=status_every,
    )  # fmt: skip
    code = run_stack(options, "up")
    if code:
        raise typer.Exit(code)
