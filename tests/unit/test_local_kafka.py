"""The local broker's pieces that need no broker: config rendering, the jar cache marker, pid
checks, and the refusals (missing tools, taken ports, pids that are not ours)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoring.settings import KafkaSettings
from stream.local_kafka import (
    JAR_MARKER,
    LocalKafka,
    LocalKafkaError,
    fetch_jars,
    is_our_broker,
    jars_complete,
    java_executable,
    new_cluster_id,
    pid_alive,
    render_log4j_properties,
    render_pom,
    render_server_properties,
)


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.fixture
def kafka(tmp_path: Path) -> KafkaSettings:
    return KafkaSettings(
        local_port=39092,
        local_controller_port=39093,
        local_dir=tmp_path / "broker",
        jar_cache=tmp_path / "jars",
        partitions=4,
    )


def test_server_properties_single_kraft_node_on_loopback(kafka: KafkaSettings) -> None:
    props = parse_properties(render_server_properties(kafka, kafka.local_dir / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:39093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:39092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert Path(props["log.dirs"]).is_absolute()
    assert props["log.dirs"] == str((kafka.local_dir / "data").resolve())


def test_server_properties_tuned_for_one_small_machine(kafka: KafkaSettings) -> None:
    props = parse_properties(render_server_properties(kafka, kafka.local_dir / "data"))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "offsets.topic.num.partitions",
        "transaction.state.log.num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.cleaner.dedupe.buffer.size"] == str(32 * 1024 * 1024)
    assert props["num.network.threads"] == props["num.io.threads"] == "2"
    assert props["auto.create.topics.enable"] == "true"  # faust relies on it
    assert props["num.partitions"] == "4"  # auto-created topics match the data topics


def test_log4j_writes_to_an_absolute_file(tmp_path: Path) -> None:
    props = parse_properties(render_log4j_properties(tmp_path / "logs" / "server.log"))
    assert props["log4j.appender.file.File"] == str((tmp_path / "logs" / "server.log").resolve())
    assert props["log4j.appender.stdout.Threshold"] == "WARN"


def test_pom_lists_broker_and_logging_backend() -> None:
    pom = render_pom("3.9.2")
    for artifact in ("kafka_2.13</artifactId><version>3.9.2", "slf4j-reload4j", "reload4j"):
        assert artifact in pom
    with pytest.raises(LocalKafkaError, match="local_version"):
        render_pom("3.9.2</version><evil>")


def test_cluster_id_is_22_char_base64url_of_16_bytes() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_jar_marker_decides_whether_the_cache_is_complete(tmp_path: Path) -> None:
    libs = tmp_path / "3.9.2" / "libs"
    libs.mkdir(parents=True)
    for name in ("kafka_2.13-3.9.2.jar", "kafka-clients-3.9.2.jar"):
        (libs / name).write_bytes(b"jar")
    assert not jars_complete(libs, "3.9.2")  # no marker: an interrupted download
    marker = libs.parent / JAR_MARKER
    marker.write_text(json.dumps({"version": "3.9.2", "jars": sorted(os.listdir(libs))}))
    assert jars_complete(libs, "3.9.2")
    assert not jars_complete(libs, "3.9.1")
    (libs / "kafka-clients-3.9.2.jar").unlink()
    assert not jars_complete(libs, "3.9.2")
    marker.write_text("{not json")
    assert not jars_complete(libs, "3.9.2")


def test_missing_mvn_and_java_give_clear_errors(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match=r"'mvn' not found.*BOOTSTRAP_SERVERS"):
        fetch_jars(kafka)
    with pytest.raises(LocalKafkaError, match="'java' not found"):
        java_executable()


def _fake_broker(argv_tail: list[str]) -> subprocess.Popen[bytes]:
    """A sleeping Python whose argv looks like ``java … kafka.Kafka <config>``."""
    script = "import time; time.sleep(60)"
    return subprocess.Popen(
        ["bash", "-c", f'exec -a java "{sys.executable}" -c "{script}" "$@"', "bash", *argv_tail]
    )


@pytest.fixture
def fake_broker(kafka: KafkaSettings) -> Iterator[subprocess.Popen[bytes]]:
    config = LocalKafka(kafka).config_path
    proc = _fake_broker(["kafka.Kafka", str(config)])
    deadline = time.monotonic() + 5
    while not is_our_broker(proc.pid, config) and time.monotonic() < deadline:
        time.sleep(0.02)  # until bash has exec'd
    yield proc
    proc.kill()
    proc.wait()


def test_is_our_broker_checks_java_kafka_and_our_config(
    kafka: KafkaSettings, fake_broker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    config = LocalKafka(kafka).config_path
    assert is_our_broker(fake_broker.pid, config)
    assert not is_our_broker(fake_broker.pid, tmp_path / "other" / "server.properties")
    assert not is_our_broker(os.getpid(), config)  # pytest: not java


def test_zombie_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not pid_alive(child.pid)  # exited but not yet reaped
    child.wait()
    assert not pid_alive(child.pid)


def test_down_stops_the_process_named_in_the_pidfile(
    kafka: KafkaSettings, fake_broker: subprocess.Popen[bytes]
) -> None:
    broker = LocalKafka(kafka)
    broker.home.mkdir(parents=True)
    broker.pid_path.write_text(f"{fake_broker.pid}\n")
    assert broker.status(timeout=0.1).running
    result = broker.down(timeout=5)
    assert result.note.startswith(f"stopped pid {fake_broker.pid}")
    assert fake_broker.wait(5) == -signal.SIGTERM
    assert not broker.pid_path.exists()


def test_down_never_signals_a_pid_that_is_not_our_broker(kafka: KafkaSettings) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        broker = LocalKafka(kafka)
        broker.home.mkdir(parents=True)
        broker.pid_path.write_text(f"{bystander.pid}\n")  # stale pidfile, pid reused
        result = broker.down(timeout=1)
        assert result.note == "not running"
        assert bystander.poll() is None
        assert not broker.pid_path.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_up_refuses_a_port_taken_by_someone_else(kafka: KafkaSettings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = kafka.model_copy(update={"local_port": squatter.getsockname()[1]})
        with pytest.raises(LocalKafkaError, match="FRAUD_KAFKA__LOCAL_PORT"):
            LocalKafka(taken).up(timeout=5)
    assert not LocalKafka(taken).pid_path.exists()


def test_status_of_a_broker_never_started(kafka: KafkaSettings) -> None:
    status = LocalKafka(kafka).status(timeout=0.1)
    assert (status.running, status.ready, status.external) == (False, False, False)
    assert status.bootstrap == "127.0.0.1:39092"
    assert status.note == "stopped" and status.cluster_id is None


def test_external_cluster_is_never_started_or_stopped(tmp_path: Path) -> None:
    external = KafkaSettings(bootstrap_servers="127.0.0.1:1", local_dir=tmp_path / "unused")
    broker = LocalKafka(external)
    with pytest.raises(LocalKafkaError, match=r"external cluster 127\.0\.0\.1:1 "):
        broker.up(timeout=0.5)
    assert "nothing to stop" in broker.down().note
    assert not (tmp_path / "unused").exists()
