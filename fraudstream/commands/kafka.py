"""``fraudstream kafka …``: fetch, start, stop and inspect the local broker; create the topics.

The work is done by ``stream.local_kafka`` and ``stream.topics``; this module only renders. Heavy
imports (confluent-kafka, rich) happen inside the commands so ``fraudstream --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from stream.local_kafka import BrokerStatus

app = typer.Typer(
    help="Run the local single-node Kafka broker (KRaft on 127.0.0.1), or check the external "
    "cluster set by FRAUD_KAFKA__BOOTSTRAP_SERVERS.",
    no_args_is_help=True,
)

EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3  # LSB `status` convention: program is not running


def _consoles() -> tuple[Console, Console]:
    from rich.console import Console

    return Console(), Console(stderr=True)


def _fail(err: Console, message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(EXIT_FAILED)


def _print_status(out: Console, status: BrokerStatus) -> None:
    from rich.table import Table

    if status.external:
        state = "[green]answers[/]" if status.ready else "[red]does not answer[/]"
        title = "Kafka: external cluster"
    else:
        state = "[green]running[/]" if status.ready else "[red]stopped[/]"
        if status.running and not status.ready:
            state = "[yellow]running, not answering yet[/]"
        title = "Kafka: local broker"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, object]] = [
        ("state", state),
        ("bootstrap", status.bootstrap),
        ("pid", status.pid),
        ("version", status.version),
        ("data dir", status.data_dir),
        ("cluster id", status.cluster_id),
        ("brokers", ", ".join(status.brokers) or None),
        ("note", status.note),
    ]
    for name, value in rows:
        if value is not None:
            table.add_row(name, str(value))
    out.print(table)


@app.command()
def fetch() -> None:
    """Download the broker jars from Maven Central into the jar cache (no-op when cached).

    Needs `mvn` on PATH. The jars go to FRAUD_KAFKA__JAR_CACHE/<version>/libs.
    """
    from scoring.settings import get_settings
    from stream.local_kafka import LocalKafkaError, fetch_jars, jars_complete, libs_dir

    out, err = _consoles()
    kafka = get_settings().kafka
    if jars_complete(libs_dir(kafka), kafka.local_version):
        out.print(f"Kafka {kafka.local_version} jars already cached in {libs_dir(kafka)}")
        return
    try:
        with out.status(f"Fetching Kafka {kafka.local_version} jars with mvn…"):
            libs = fetch_jars(kafka)
    except LocalKafkaError as exc:
        raise _fail(err, str(exc)) from None
    count = len(list(libs.glob("*.jar")))
    out.print(f"[green]✓[/] Kafka {kafka.local_version}: {count} jars in {libs}")


@app.command()
def up(
    timeout: float = typer.Option(60.0, help="Seconds to wait for the broker to answer."),
) -> None:
    """Start the local broker and wait until it answers metadata (no-op when it runs).

    Data in the local dir is kept between runs. With FRAUD_KAFKA__BOOTSTRAP_SERVERS set, nothing
    is started: the external cluster is checked instead.
    """
    from stream.local_kafka import LocalKafka, LocalKafkaError

    out, err = _consoles()
    broker = LocalKafka()
    try:
        with out.status("Starting Kafka…") as spinner:
            status = broker.up(timeout=timeout, progress=lambda msg: spinner.update(f"{msg}…"))
    except LocalKafkaError as exc:
        raise _fail(err, str(exc)) from None
    out.print(f"[green]✓[/] Kafka on {status.bootstrap}: {status.note}", highlight=False)
    _print_status(out, status)


@app.command()
def down(
    timeout: float = typer.Option(30.0, help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop the local broker started by `kafka up` (no-op when it is not running). Data is kept.

    Only the process in the pidfile is signalled, after checking it is our java kafka.Kafka.
    """
    from stream.local_kafka import LocalKafka, LocalKafkaError

    out, err = _consoles()
    try:
        with out.status("Stopping Kafka…") as spinner:
            status = LocalKafka().down(
                timeout=timeout, progress=lambda msg: spinner.update(f"{msg}…")
            )
    except LocalKafkaError as exc:
        raise _fail(err, str(exc)) from None
    out.print(f"[green]✓[/] Kafka on {status.bootstrap}: {status.note}", highlight=False)


@app.command()
def status(
    timeout: float = typer.Option(5.0, help="Seconds to wait for a metadata answer."),
) -> None:
    """Show whether the broker runs and answers, where, and with which data.

    Exit code 0 when it answers, 3 when the local broker is stopped, 1 when the external cluster
    does not answer or the local one runs but does not answer.
    """
    from stream.local_kafka import LocalKafka

    out, _ = _consoles()
    result = LocalKafka().status(timeout=timeout)
    _print_status(out, result)
    if not result.ready:
        stopped = not result.external and not result.running
        raise typer.Exit(EXIT_NOT_RUNNING if stopped else EXIT_FAILED)


@app.command()
def topics(
    timeout: float = typer.Option(30.0, help="Seconds to wait for the cluster."),
) -> None:
    """Create the service's topics (idempotent: existing topics are left as they are).

    transactions, decisions, feature-log, labels, model-updates (compacted, 1 partition) and
    transactions-dlq, with FRAUD_KAFKA__TOPIC_PREFIX and FRAUD_KAFKA__PARTITIONS.
    """
    from confluent_kafka import KafkaException
    from rich.table import Table

    from scoring.settings import get_settings
    from stream.topics import create_topics

    out, err = _consoles()
    kafka = get_settings().kafka
    try:
        with out.status(f"Creating topics on {kafka.effective_bootstrap()}…"):
            results = create_topics(kafka, timeout=timeout)
    except KafkaException as exc:
        raise _fail(err, f"creating topics on {kafka.effective_bootstrap()}: {exc}") from None
    table = Table(title=f"Topics on {kafka.effective_bootstrap()}", title_justify="left")
    for column in ("topic", "partitions", "result"):
        table.add_column(column)
    for r in results:
        outcome = "[green]created[/]" if r.created else "exists"
        if r.mismatch:
            outcome += f" [yellow](configured {r.wanted_partitions} partitions; not changed)[/]"
        table.add_row(r.name, str(r.partitions), outcome)
    out.print(table)
