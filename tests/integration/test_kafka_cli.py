"""`fraudstream kafka …` end to end: the real console script starting and stopping a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from stream.local_kafka import is_our_broker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FreePorts = Callable[[int], list[int]]

FRAUDSTREAM = Path(sys.executable).with_name("fraudstream")


def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [str(FRAUDSTREAM)] if FRAUDSTREAM.exists() else [sys.executable, "-m", "fraudstream.cli"]
    return subprocess.run(
        [*cmd, "kafka", *args],
        env={**env, "COLUMNS": "200"},  # rich wraps at 80 columns without a terminal
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def our_java_pids(local_dir: Path) -> list[int]:
    """Every live java kafka.Kafka running with this directory's config."""
    config = local_dir / "server.properties"
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if is_our_broker(pid, config)]


@pytest.fixture
def cli_env(tmp_path: Path, free_tcp_ports: FreePorts) -> Iterator[dict[str, str]]:
    """Environment for a CLI-managed broker in tmp_path on free ports; stops it whatever happens."""
    port, controller_port = free_tcp_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "FRAUD_KAFKA__BOOTSTRAP_SERVERS"}
    env |= {
        "FRAUD_KAFKA__LOCAL_DIR": str(tmp_path / "broker"),
        "FRAUD_KAFKA__LOCAL_PORT": str(port),
        "FRAUD_KAFKA__LOCAL_CONTROLLER_PORT": str(controller_port),
        "FRAUD_KAFKA__TOPIC_PREFIX": "cli.",
    }
    yield env
    run_cli(env, "down")
    assert our_java_pids(tmp_path / "broker") == []


def test_up_status_down_lifecycle(cli_env: dict[str, str]) -> None:
    local_dir = Path(cli_env["FRAUD_KAFKA__LOCAL_DIR"])
    address = f"127.0.0.1:{cli_env['FRAUD_KAFKA__LOCAL_PORT']}"

    stopped = run_cli(cli_env, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "not running" in stopped.stdout
    status = run_cli(cli_env, "status")
    assert status.returncode == 3 and "stopped" in status.stdout

    first = run_cli(cli_env, "up")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "started" in first.stdout
    again = run_cli(cli_env, "up")
    assert again.returncode == 0 and "already running" in again.stdout
    status = run_cli(cli_env, "status")
    assert status.returncode == 0, status.stdout
    assert "running" in status.stdout and address in status.stdout
    assert len(our_java_pids(local_dir)) == 1
    cluster_id = AdminClient({"bootstrap.servers": address}).list_topics(timeout=10).cluster_id
    assert cluster_id in status.stdout

    topics = run_cli(cli_env, "topics")
    assert topics.returncode == 0, topics.stdout + topics.stderr
    assert topics.stdout.count("created") == 6 and "cli.transactions" in topics.stdout

    for _ in range(2):
        down = run_cli(cli_env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped pid" not in down.stdout and "not running" in down.stdout
    assert our_java_pids(local_dir) == []
    assert not (local_dir / "kafka.pid").exists()

    # Data survives a restart: same cluster, topics still there (the chaos tests rely on this).
    restarted = run_cli(cli_env, "up")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert cluster_id in restarted.stdout
    topics = run_cli(cli_env, "topics")
    assert topics.returncode == 0 and topics.stdout.count("exists") == 6, topics.stdout
    final = run_cli(cli_env, "down")
    assert final.returncode == 0 and "clean shutdown" in final.stdout, final.stdout
    assert our_java_pids(local_dir) == []


def test_external_cluster_is_reported_never_started_or_stopped(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {**os.environ, "FRAUD_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap}
    env["FRAUD_KAFKA__LOCAL_DIR"] = str(tmp_path / "unused")
    for verb in ("up", "status", "down"):
        result = run_cli(env, verb)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "external" in result.stdout
    # `down` left the session broker alone, and nothing was written locally.
    assert AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).brokers
    assert not (tmp_path / "unused").exists()


def test_external_cluster_that_does_not_answer_fails(free_tcp_ports: FreePorts) -> None:
    (port,) = free_tcp_ports(1)  # nothing listens there
    env = {**os.environ, "FRAUD_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    up = run_cli(env, "up", "--timeout", "2")
    assert up.returncode == 1 and "did not answer" in up.stderr
    status = run_cli(env, "status", "--timeout", "2")
    assert status.returncode == 1 and "does not answer" in status.stdout
