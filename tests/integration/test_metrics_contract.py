"""The dashboard's and the alerts' metrics are exported by the running services.

A small simulated world and a registered champion; the real broker; `fraudstream worker`,
`fraudstream api` and `fraudstream trainer` as subprocesses on free ports, with a little traffic
through the stream and the API. Then each service's /metrics is scraped and checked against the
chart's contract (deploy/helm/fraudstream/METRICS.md):

* every metric name a PromQL expression of dashboards/fraudstream.json or of the rendered
  templates/prometheusrule.yaml reads is in at least one service's exposition;
* every service exports exactly the METRICS.md rows that list it as an exporter.

A family counts as exported when its ``# TYPE`` line is there: prometheus_client writes it for a
labelled metric before its first sample. Histograms are read as ``<name>_bucket/_sum/_count``; the
``<name>_created`` gauges prometheus_client adds to counters and histograms belong to their family.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from api.security import hash_key
from scoring.registry import ModelRegistry
from stream.replay import replay
from tests.helm.test_chart import (
    CHART,
    ENSURE_HELM_TIMEOUT,
    KUBE_VERSION,
    NAMESPACE,
    PRODUCTION_VALUES,
    RELEASE,
    dashboard_exprs,
    metric_names,
    metrics_md_rows,
)
from tests.integration.stream_harness import Stack, WorkerProcess, read_topic
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("worker", "api", "trainer")
KEYS = {"patient": "key-patient-0123", "eager": "key-eager-01234"}
BANKS = {"patient": {"deadline_ms": 10_000}, "eager": {"deadline_ms": 1}}  # eager: fallback


def exported_families(text: str) -> dict[str, str]:
    """name -> type of every ``fraudstream_`` family in a Prometheus text exposition."""
    types = dict(re.findall(r"^# TYPE (fraudstream_\w+) (\w+)$", text, re.M))
    families = {}
    for name, kind in types.items():
        base = name.removesuffix("_created")
        if (
            name.endswith("_created")
            and kind == "gauge"
            and (types.get(f"{base}_total") == "counter" or types.get(base) == "histogram")
        ):
            continue  # prometheus_client's creation time of a counter or histogram
        families[name] = kind
    return families


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total, found = 0.0, False
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if line.startswith("#") or series.split("{")[0] != name:
            continue
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(pairs.get(k) == v for k, v in labels.items()):
            total, found = total + float(value), True
    assert found, f"no {name}{labels} sample in:\n{text}"
    return total


def served_by(name: str, families: dict[str, str]) -> bool:
    """Whether a PromQL series name is one of these families (histograms by their series)."""
    if name in families:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and families.get(name.removesuffix(suffix)) == "histogram":
            return True
    return False


def documented_exporters() -> dict[str, set[str]]:
    """service -> the METRICS.md names it exports (the exporters cell, before any note)."""
    out: dict[str, set[str]] = {service: set() for service in SERVICES}
    for name, row in metrics_md_rows().items():
        exporters = {e.strip() for e in row["exporters"].split(" (")[0].split(",")}
        assert exporters <= set(SERVICES), f"{name}: unknown exporter in {row['exporters']!r}"
        for service in exporters:
            out[service].add(name)
    return out


def alert_exprs(tmp_path: Path) -> list[str]:
    """The ``expr`` of every rule of templates/prometheusrule.yaml, rendered by helm with the
    production values (helm from scripts/ensure-helm, as tests/helm uses it)."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "ensure-helm")],
        capture_output=True, text=True, timeout=ENSURE_HELM_TIMEOUT, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, f"scripts/ensure-helm failed:\n{proc.stderr}"
    helm = Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }
    rendered = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "--kube-version", KUBE_VERSION, "-f", str(PRODUCTION_VALUES),
         "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    (rule,) = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"] if "expr" in r]
    assert exprs
    return exprs


def start_service(
    stack: Stack, verb: str, name: str, env: dict[str, str], *args: str
) -> WorkerProcess:
    """``fraudstream <verb>`` as a subprocess; stopped (killed) by the stack when the test ends."""
    (port,) = stack.ports(1)
    log = stack.root / f"{name}.log"
    handle = open(log, "wb")  # noqa: SIM115 -- the child owns it for its lifetime
    process = subprocess.Popen(
        [sys.executable, "-m", "fraudstream", verb, "--port", str(port), *args],
        env=env, stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    service = WorkerProcess(name, process, port, log)
    stack.workers.append(service)
    return service


def test_the_dashboard_and_alert_metrics_are_exported_by_the_running_services(
    stack_factory: Callable[[Path], Stack], tmp_path: Path
) -> None:
    # The chart's side first: cheap, and a broken chart should not cost a service start.
    queried: set[str] = set()
    for expr in [*dashboard_exprs(), *alert_exprs(tmp_path / "helm")]:
        queried |= metric_names(expr)
    documented = documented_exporters()

    # tests/api/test_api_stream.py's world: ~3.4k transactions, enough fraud in four days
    transactions, labels = simulate(SimulationConfig(days=5, cards=400, seed=5))
    registry_dir = tmp_path / "registry"
    registry = ModelRegistry(registry_dir)
    start = transactions.column("timestamp")[0].as_py()
    champion = train_and_register(
        transactions, labels, registry=registry, until=start + timedelta(days=4), seed=1
    ).version
    registry.promote(champion)

    stack = stack_factory(registry_dir)
    base = {
        **stack.env,
        "FRAUD_KAFKA__TOPIC_PREFIX": stack.kafka.topic_prefix,
        "FRAUD_SCORING__REGISTRY": str(registry_dir),
    }
    # All three start at once (each takes seconds to import, load the model and join Kafka).
    worker = stack.start("worker", FRAUD_STREAM__SOURCE_IDLE_MS="20")
    api = start_service(
        stack, "api", "api",
        {**base,
         "FRAUD_API__API_KEYS": json.dumps({b: [hash_key(k)] for b, k in KEYS.items()}),
         "FRAUD_SCORING__BANKS": json.dumps(BANKS)},
        "--registry", str(registry_dir),
    )  # fmt: skip
    trainer = start_service(
        stack, "trainer", "trainer",
        {**base, "FRAUD_TRAINING__LABEL_MATURITY_DAYS": "1", "FRAUD_TRAINING__WINDOW_DAYS": "3",
         "FRAUD_TRAINING__EVAL_DAYS": "1"},
    )  # fmt: skip
    for service in (worker, api, trainer):
        service.wait_ready(120)

    # A little traffic: the simulated log through the worker, and decisions through the API
    # (one bank waits for the stream, one gets the fallback).
    assert replay(transactions, labels, kafka=stack.kafka).failed == 0
    read_topic(stack.kafka, stack.topics.decisions, expected=transactions.num_rows, quiet=0.5)
    card = transactions.column("card_id")[0].as_py()
    merchant = transactions.column("merchant_id")[0].as_py()
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=30) as client:
        for bank in KEYS:
            response = client.post(
                "/v1/transactions",
                headers={"Authorization": f"Bearer {KEYS[bank]}"},
                json={
                    "transaction_id": f"contract-{bank}", "card_id": card,
                    "timestamp": now, "amount": 42.0, "currency": "EUR",
                    "merchant_id": merchant, "country": "FR", "channel": "ecom",
                    "card_present": False,
                },
            )  # fmt: skip
            assert response.status_code == 200, response.text

    scraped = {
        "worker": exported_families(worker.metrics()),
        "api": exported_families(api.metrics()),
        "trainer": exported_families(trainer.metrics()),
    }
    everything: dict[str, str] = {}
    for families in scraped.values():
        everything.update(families)
    missing = sorted(n for n in queried if not served_by(n, everything))
    assert missing == [], (
        f"queried by the dashboard or the alerts, exported by no service: {missing}"
    )
    for service, families in scraped.items():
        names, wanted = set(families), documented[service]
        assert names == wanted, (
            f"{service}: exported, not in METRICS.md for it: {sorted(names - wanted)}; "
            f"in METRICS.md for it, not exported: {sorted(wanted - names)}"
        )
        rows = metrics_md_rows()
        for name, kind in families.items():
            assert rows[name]["type"] == kind, f"{service}: {name} is a {kind}"
    # the traffic reached the services (not only empty families)
    worker_text, api_text = worker.metrics(), api.metrics()
    out = sample(worker_text, "fraudstream_stream_events_total", direction="out")
    assert out >= transactions.num_rows  # the replay, and the API's transactions once decided
    assert sample(worker_text, "fraudstream_decisions_total", action="approve") > 0
    assert sample(api_text, "fraudstream_degraded_decisions_total", bank="eager") == 1
    assert sample(api_text, "fraudstream_decision_cost_usd_count", kind="review") == 2
    for service in (worker, api, trainer):
        assert service.stop() == 0, service.tail()
