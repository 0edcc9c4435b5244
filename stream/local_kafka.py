"""The local single-node Kafka broker (KRaft, no ZooKeeper, no Docker) behind ``fraudstream kafka``.

The broker is plain Apache Kafka from Maven Central, started as a detached ``java`` process on
127.0.0.1. Everything it owns lives in ``KafkaSettings.local_dir``::

    server.properties   broker config, rewritten on every ``up`` from the settings
    log4j.properties    logging config, rewritten on every ``up``
    data/               log.dirs + KRaft metadata log; formatted once, kept across up/down
    logs/server.log     the broker's own log (INFO)
    logs/kafka.out      the JVM's stdout/stderr (WARN and above, crashes)
    kafka.pid           pid of the running broker; present only while it runs
    .lock               serialises concurrent up/down on the same directory

Jars are cached per version under ``KafkaSettings.jar_cache``. When
``KafkaSettings.bootstrap_servers`` is set, nothing is started or stopped: the configured cluster is
used and only checked. See docs/kafka.md.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scoring.settings import KafkaSettings, get_settings

if TYPE_CHECKING:
    from confluent_kafka.admin import ClusterMetadata

log = logging.getLogger(__name__)

NODE_ID = 1
LOCAL_HOST = "127.0.0.1"
JAR_MARKER = "COMPLETE.json"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
# The broker POM leaves the slf4j backend open; reload4j is what Kafka's own distribution ships.
LOGGING_JARS = (
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
    ("ch.qos.reload4j", "reload4j", "1.2.25"),
)
# JVM flags from Kafka's own kafka-run-class.sh, plus a clean exit on OOM: a broker that has run out
# of heap should die loudly (and be seen dead by `status`) rather than limp on.
BROKER_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# StorageTool runs for a second: the C1 compiler alone starts faster and it needs little heap.
TOOL_JVM_FLAGS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

Progress = Callable[[str], None]


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started, stopped, or reached. The message says why."""


def _no_progress(_message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------------
# Jars


def libs_dir(kafka: KafkaSettings) -> Path:
    """Where the jars of ``kafka.local_version`` are (or will be) cached."""
    return kafka.jar_cache.expanduser().resolve() / kafka.local_version / "libs"


def _check_version(version: str) -> None:
    # The version goes into a POM and a path; refuse anything that is not a plain release number.
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise LocalKafkaError(f"local_version must look like 3.9.2, got {version!r}")


def render_pom(version: str) -> str:
    """A throw-away POM whose runtime dependencies are exactly the broker's classpath."""
    _check_version(version)
    deps = (("org.apache.kafka", "kafka_2.13", version), *LOGGING_JARS)
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fraudstream.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def jars_complete(libs: Path, version: str) -> bool:
    """True when a finished download is cached: the marker exists and every jar it lists is there.

    The marker is written last, so an interrupted download has none and is redone.
    """
    marker = libs.parent / JAR_MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    jars = recorded.get("jars") if isinstance(recorded, dict) else None
    if recorded.get("version") != version or not isinstance(jars, list) or not jars:
        return False
    return all((libs / name).is_file() for name in jars)


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalKafkaError(
            f"'{name}' not found on PATH: {hint} "
            "(or set FRAUD_KAFKA__BOOTSTRAP_SERVERS to use an existing Kafka cluster)"
        )
    return path


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when set (what Kafka's scripts do), else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return _require_tool("java", "install a JDK 17+ (e.g. apt install openjdk-17-jdk-headless)")


def fetch_jars(kafka: KafkaSettings | None = None, *, timeout: float = 900.0) -> Path:
    """Download the broker jars with Maven into the jar cache; return the ``libs`` directory.

    A no-op when the cache is complete. Safe to call from several processes at once (file lock).
    """
    kafka = kafka or get_settings().kafka
    _check_version(kafka.local_version)
    libs = libs_dir(kafka)
    if jars_complete(libs, kafka.local_version):
        return libs
    mvn = _require_tool("mvn", "install Maven 3.8+ (e.g. apt install maven)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(libs.parent / ".lock"):
        if jars_complete(libs, kafka.local_version):  # another process finished while we waited
            return libs
        shutil.rmtree(libs, ignore_errors=True)
        (libs.parent / JAR_MARKER).unlink(missing_ok=True)
        _run_maven(mvn, kafka.local_version, libs, timeout)
        _write_jar_marker(libs, kafka.local_version)
    return libs


def _run_maven(mvn: str, version: str, libs: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="fraudstream-kafka-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(render_pom(version))
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            # Named version: Maven 3.8's bare `dependency:` prefix resolves an ancient plugin.
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(
                cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"mvn did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        output = _tail_text(done.stdout + done.stderr, 30)
        raise LocalKafkaError(f"mvn failed (exit {done.returncode}) fetching Kafka jars:\n{output}")


def _write_jar_marker(libs: Path, version: str) -> None:
    jars = sorted(p.name for p in libs.glob("*.jar"))
    if f"kafka_2.13-{version}.jar" not in jars:
        raise LocalKafkaError(f"mvn finished but kafka_2.13-{version}.jar is not in {libs}")
    marker = {"version": version, "jars": jars, "fetched_at": time.time()}
    tmp = libs.parent / f".{JAR_MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    tmp.replace(libs.parent / JAR_MARKER)


# --------------------------------------------------------------------------------------------------
# Config rendering


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 base64url characters (what ``random-uuid`` prints).

    Kafka's own generator never returns an id starting with '-' (it would read as a CLI flag).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _prop_value(value: object) -> str:
    # Java .properties treat backslash as an escape; nothing else in our values needs quoting.
    return str(value).replace("\\", "\\\\")


def render_server_properties(kafka: KafkaSettings, data_dir: Path) -> str:
    """server.properties for one combined broker+controller KRaft node on 127.0.0.1."""
    port, cport = kafka.local_port, kafka.local_controller_port
    props: list[tuple[str, object, str]] = [
        ("process.roles", "broker,controller", "one JVM is both the broker and the KRaft quorum"),
        ("node.id", NODE_ID, ""),
        ("controller.quorum.voters", f"{NODE_ID}@{LOCAL_HOST}:{cport}", ""),
        ("listeners", f"PLAINTEXT://{LOCAL_HOST}:{port},CONTROLLER://{LOCAL_HOST}:{cport}", ""),
        ("advertised.listeners", f"PLAINTEXT://{LOCAL_HOST}:{port}", "clients see loopback only"),
        ("controller.listener.names", "CONTROLLER", ""),
        ("inter.broker.listener.name", "PLAINTEXT", ""),
        ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT", ""),
        ("log.dirs", data_dir.resolve(), "absolute: the JVM's cwd must not matter"),
        # One replica exists, so every replication factor and min ISR is 1.
        ("offsets.topic.replication.factor", 1, ""),
        ("transaction.state.log.replication.factor", 1, "exactly-once needs the txn log"),
        ("transaction.state.log.min.isr", 1, ""),
        ("default.replication.factor", 1, ""),
        ("min.insync.replicas", 1, ""),
        # Defaults are 50 partitions each: 100 partitions to load and elect on 2 cores for nothing.
        ("offsets.topic.num.partitions", 1, ""),
        ("transaction.state.log.num.partitions", 1, ""),
        # Default 3 s: every consumer-group (faust worker) start would wait for late joiners.
        ("group.initial.rebalance.delay.ms", 0, ""),
        # Default 128 MiB of heap for compaction; faust changelogs are compacted, so it does run.
        ("log.cleaner.dedupe.buffer.size", 33554432, "32 MiB fits the 512 MiB heap"),
        # Defaults 3 network + 8 io threads; the machine has 2 cores.
        ("num.network.threads", 2, ""),
        ("num.io.threads", 2, ""),
        # faust produces to topics (reply topics, sinks) it has not declared, relying on creation
        # from metadata; keep Kafka's default on, with the configured count for such topics.
        ("auto.create.topics.enable", "true", ""),
        ("num.partitions", kafka.partitions, "auto-created topics match the data topics"),
    ]
    lines = [
        "# Generated by fraudstream (stream/local_kafka.py) on every `fraudstream kafka up`;",
        "# edits are overwritten. Change KafkaSettings / FRAUD_KAFKA__* instead.",
    ]
    for key, value, why in props:
        if why:
            lines.append(f"# {why}")
        lines.append(f"{key}={_prop_value(value)}")
    return "\n".join(lines) + "\n"


def render_log4j_properties(log_file: Path) -> str:
    """reload4j config: INFO and above to a rolling file, WARN and above to stdout (kafka.out)."""
    pattern = "[%d] %p %m (%c)%n"
    return f"""# Generated by fraudstream; overwritten on every `fraudstream kafka up`.
log4j.rootLogger=INFO, file, stdout
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={_prop_value(log_file.resolve())}
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern={pattern}
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.Threshold=WARN
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern={pattern}
# Per-request and per-partition state logs are noise for a dev broker.
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


# --------------------------------------------------------------------------------------------------
# Processes


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs. A zombie counts as dead: it holds no ports and answers nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): kill(0) is the best we have
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def process_argv(pid: int) -> list[str] | None:
    """The command line of ``pid``, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return _argv_from_ps(pid)
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _argv_from_ps(pid: int) -> list[str] | None:
    done = subprocess.run(
        ["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return done.stdout.split() if done.returncode == 0 and done.stdout.strip() else None


def is_our_broker(pid: int, config_path: Path) -> bool:
    """True when ``pid`` is a live ``java … kafka.Kafka <config_path>``: safe for us to signal.

    Pids are reused: a stale pidfile may name an unrelated process, which we must never kill.
    """
    if not pid_alive(pid):
        return False
    argv = process_argv(pid)
    if not argv:
        return False
    return (
        Path(argv[0]).name == "java"
        and "kafka.Kafka" in argv
        and str(config_path.resolve()) in argv
    )


def _scan_for_broker(config_path: Path) -> int | None:
    """Find our broker without a pidfile (it was deleted, or a crash left none). Linux only."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if entry.name.isdigit() and is_our_broker(int(entry.name), config_path):
            return int(entry.name)
    return None


def port_in_use(port: int, host: str = LOCAL_HOST) -> bool:
    """True when something listens on host:port (binding fails even with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port_accepts(port: int, host: str = LOCAL_HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            return _tail_text(handle.read().decode(errors="replace"), lines)
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------------
# Talking to a broker


def _quiet_logger() -> logging.Logger:
    # librdkafka logs every refused connection at ERROR; while probing, those are expected.
    quiet = logging.getLogger("fraudstream.kafka.probe")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    return quiet


def probe_metadata(kafka: KafkaSettings, timeout: float) -> ClusterMetadata | None:
    """One metadata request to ``kafka.effective_bootstrap()``; None when it does not answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    config = kafka.client_config()
    # librdkafka backs off up to 10 s between reconnects by default: too slow to notice a broker
    # that has just come up.
    config["reconnect.backoff.max.ms"] = 500
    admin = AdminClient(config, logger=_quiet_logger(), error_cb=lambda _err: None)
    try:
        return admin.list_topics(timeout=max(timeout, 0.1))
    except KafkaException:
        return None


def broker_list(metadata: ClusterMetadata) -> tuple[str, ...]:
    """``id@host:port`` of every broker in a metadata answer, sorted by id."""
    return tuple(f"{b.id}@{b.host}:{b.port}" for _, b in sorted(metadata.brokers.items()))


# --------------------------------------------------------------------------------------------------
# The broker


@dataclass(frozen=True)
class BrokerStatus:
    """What ``up``, ``down`` and ``status`` found or did, for humans (``note``) and code."""

    external: bool  # bootstrap_servers is set: a cluster we neither start nor stop
    running: bool  # local: our JVM is alive; external: metadata answers
    ready: bool  # a metadata request answered
    bootstrap: str
    note: str
    pid: int | None = None
    version: str | None = None
    data_dir: Path | None = None
    cluster_id: str | None = None
    brokers: tuple[str, ...] = field(default_factory=tuple)


class LocalKafka:
    """Start, stop and inspect the single-node KRaft broker described by ``KafkaSettings``.

    ``up``/``down`` are idempotent and safe to run from several processes (file lock). With
    ``bootstrap_servers`` set, they only check and report the external cluster.
    """

    def __init__(self, kafka: KafkaSettings | None = None) -> None:
        self.kafka = kafka or get_settings().kafka
        self.home = self.kafka.local_dir.expanduser().resolve()
        self.config_path = self.home / "server.properties"
        self.log4j_path = self.home / "log4j.properties"
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.stdout_log = self.logs_dir / "kafka.out"
        self.server_log = self.logs_dir / "server.log"
        self.pid_path = self.home / "kafka.pid"
        self._proc: subprocess.Popen[bytes] | None = None  # set when this object started the JVM

    @property
    def external(self) -> bool:
        return bool(self.kafka.bootstrap_servers)

    @property
    def bootstrap(self) -> str:
        return self.kafka.effective_bootstrap()

    # ---- public verbs -----------------------------------------------------------------------

    def up(self, timeout: float = 60.0, progress: Progress = _no_progress) -> BrokerStatus:
        """Make sure the broker runs and answers metadata; start it if needed.

        Raises LocalKafkaError when it cannot (external cluster silent, port taken, JVM died…).
        """
        if self.external:
            return self._require_external(timeout, progress)
        with _file_lock(self.home / ".lock"):
            pid = self.find_pid()
            if pid is not None:
                progress(f"broker already running (pid {pid}); checking it answers")
                metadata = self._wait_ready(pid, time.monotonic() + timeout, progress)
                return self._local_status(pid, metadata, "already running")
            return self._start(timeout, progress)

    def down(self, timeout: float = 30.0, progress: Progress = _no_progress) -> BrokerStatus:
        """Stop our broker (SIGTERM, then SIGKILL after ``timeout``); keep its data."""
        if self.external:
            note = f"external cluster {self.bootstrap}: nothing to stop"
            return self.status(timeout=2.0, note=note)
        with _file_lock(self.home / ".lock"):
            pid = self.find_pid()
            if pid is None:
                self.pid_path.unlink(missing_ok=True)  # stale: its process is gone or not ours
                return self._local_status(None, None, "not running")
            progress(f"stopping broker (pid {pid})")
            how = self._stop(pid, timeout)
            self.pid_path.unlink(missing_ok=True)
            return self._local_status(None, None, f"stopped pid {pid} ({how})")

    def status(self, timeout: float = 5.0, note: str | None = None) -> BrokerStatus:
        """Report, without changing anything."""
        if self.external:
            metadata = probe_metadata(self.kafka, timeout)
            default = "answers" if metadata else "does not answer"
            return self._external_status(metadata, note or f"external cluster {default}")
        pid = self.find_pid()
        metadata = probe_metadata(self.kafka, timeout) if pid is not None else None
        if note is None:
            note = "stopped" if pid is None else ("running" if metadata else "running, not ready")
        return self._local_status(pid, metadata, note)

    def find_pid(self) -> int | None:
        """Pid of our running broker: the pidfile's if it names our JVM, else a /proc scan."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and is_our_broker(pid, self.config_path):
            return pid
        return _scan_for_broker(self.config_path)

    def formatted(self) -> bool:
        """KRaft storage is formatted (meta.properties exists); data is kept from earlier runs."""
        return (self.data_dir / "meta.properties").is_file()

    def cluster_id(self) -> str | None:
        """The cluster id recorded in the formatted storage."""
        try:
            text = (self.data_dir / "meta.properties").read_text()
        except OSError:
            return None
        match = re.search(r"^cluster\.id=(\S+)$", text, re.MULTILINE)
        return match.group(1) if match else None

    # ---- starting ---------------------------------------------------------------------------

    def _start(self, timeout: float, progress: Progress) -> BrokerStatus:
        started_at = time.monotonic()
        self._check_ports_free()
        java = java_executable()
        progress(f"fetching Kafka {self.kafka.local_version} jars (cached after the first time)")
        libs = fetch_jars(self.kafka)
        self._write_config()
        if not self.formatted():
            progress("formatting KRaft storage")
            self._format_storage(java, libs)
        progress(f"starting broker on {self.bootstrap}")
        pid = self._spawn(java, libs)
        try:
            metadata = self._wait_ready(pid, started_at + timeout, progress)
        except BaseException:  # also Ctrl-C while waiting
            # We started it and it is not usable: do not leave a half-started JVM behind.
            self._stop(pid, 10.0)
            self.pid_path.unlink(missing_ok=True)
            raise
        took = time.monotonic() - started_at
        return self._local_status(pid, metadata, f"started in {took:.1f} s")

    def _check_ports_free(self) -> None:
        for name, port in (
            ("local_port", self.kafka.local_port),
            ("local_controller_port", self.kafka.local_controller_port),
        ):
            if port_in_use(port):
                env = f"FRAUD_KAFKA__{name.upper()}"
                raise LocalKafkaError(
                    f"port {port} on {LOCAL_HOST} is taken by another process (not our broker "
                    f"in {self.home}); choose another with {env}"
                )

    def _write_config(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_server_properties(self.kafka, self.data_dir))
        self.log4j_path.write_text(render_log4j_properties(self.server_log))

    def _java_cmd(self, java: str, libs: Path, flags: tuple[str, ...], main: str) -> list[str]:
        return [
            java,
            *flags,
            f"-Dlog4j.configuration=file:{self.log4j_path}",
            "-cp",
            f"{libs}/*",  # the JVM expands the wildcard itself; no shell involved
            main,
        ]

    def _format_storage(self, java: str, libs: Path) -> None:
        cmd = [
            *self._java_cmd(java, libs, TOOL_JVM_FLAGS, "kafka.tools.StorageTool"),
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.config_path),
            "-g",  # --ignore-formatted: never wipe existing data
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            output = _tail_text(done.stdout + done.stderr, 20)
            raise LocalKafkaError(f"formatting KRaft storage failed:\n{output}")

    def _spawn(self, java: str, libs: Path) -> int:
        flags = (*shlex.split(self.kafka.local_heap), *BROKER_JVM_FLAGS)
        cmd = [*self._java_cmd(java, libs, flags, "kafka.Kafka"), str(self.config_path)]
        with self.stdout_log.open("ab") as out:
            out.write(f"\n=== fraudstream: starting broker {time.ctime()} ===\n".encode())
            out.flush()
            # Own session: Ctrl-C in the terminal that ran `kafka up` must not reach the broker.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        tmp = self.pid_path.with_suffix(".tmp")
        tmp.write_text(f"{self._proc.pid}\n")
        tmp.replace(self.pid_path)
        return self._proc.pid

    def _wait_ready(self, pid: int, deadline: float, progress: Progress) -> ClusterMetadata:
        """Poll metadata until it lists our node; fail fast with the log tail if the JVM dies."""
        progress(f"waiting for the broker on {self.bootstrap} to answer metadata")
        while True:
            if not pid_alive(pid):
                self._reap(pid)
                raise LocalKafkaError(f"the broker (pid {pid}) exited:\n{self._log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalKafkaError(
                    f"the broker (pid {pid}) did not answer on {self.bootstrap} in time:\n"
                    f"{self._log_tail()}"
                )
            # Metadata, not an open port, is the readiness test; the port check only avoids a
            # storm of refused connections while the JVM boots.
            if _port_accepts(self.kafka.local_port):
                metadata = probe_metadata(self.kafka, min(2.0, remaining))
                if metadata is not None and NODE_ID in metadata.brokers:
                    return metadata
            time.sleep(0.2)

    def _log_tail(self) -> str:
        parts = []
        for path in (self.stdout_log, self.server_log):
            tail = _tail_file(path)
            if tail:
                parts.append(f"--- {path} ---\n{tail}")
        return "\n".join(parts) or f"(no log output in {self.logs_dir})"

    # ---- stopping ---------------------------------------------------------------------------

    def _stop(self, pid: int, timeout: float) -> str:
        """SIGTERM (Kafka shuts down cleanly), SIGKILL if it is still there after ``timeout``."""
        if not is_our_broker(pid, self.config_path):
            return "already gone"
        os.kill(pid, signal.SIGTERM)
        if self._wait_gone(pid, timeout):
            # Kafka writes this marker last; without it the next start recovers the logs.
            clean = (self.data_dir / ".kafka_cleanshutdown").exists()
            return "clean shutdown" if clean else "exited without a clean-shutdown marker"
        log.warning("broker pid %s ignored SIGTERM for %.0f s; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_gone(pid, 10.0):
            raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")
        return "killed"

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap(pid)
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def _reap(self, pid: int) -> None:
        # When this object started the JVM it is our child: collect it so no zombie stays.
        if self._proc is not None and self._proc.pid == pid:
            self._proc.poll()

    # ---- reporting --------------------------------------------------------------------------

    def _local_status(
        self, pid: int | None, metadata: ClusterMetadata | None, note: str
    ) -> BrokerStatus:
        return BrokerStatus(
            external=False,
            running=pid is not None,
            ready=metadata is not None,
            bootstrap=self.bootstrap,
            note=note,
            pid=pid,
            version=self.kafka.local_version,
            data_dir=self.data_dir,
            cluster_id=(metadata.cluster_id if metadata else None) or self.cluster_id(),
            brokers=broker_list(metadata) if metadata else (),
        )

    def _external_status(self, metadata: ClusterMetadata | None, note: str) -> BrokerStatus:
        return BrokerStatus(
            external=True,
            running=metadata is not None,
            ready=metadata is not None,
            bootstrap=self.bootstrap,
            note=note,
            cluster_id=metadata.cluster_id if metadata else None,
            brokers=broker_list(metadata) if metadata else (),
        )

    def _require_external(self, timeout: float, progress: Progress) -> BrokerStatus:
        progress(f"checking the external cluster {self.bootstrap}")
        metadata = probe_metadata(self.kafka, timeout)
        if metadata is None:
            raise LocalKafkaError(
                f"external cluster {self.bootstrap} (FRAUD_KAFKA__BOOTSTRAP_SERVERS) did not "
                f"answer a metadata request within {timeout:.0f} s"
            )
        return self._external_status(metadata, "external cluster is used; nothing started")
