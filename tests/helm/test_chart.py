"""The Helm chart (deploy/helm/fraudstream): lint, render, validate, and check what matters.

* ``helm lint --strict`` and ``helm template`` for the defaults (with ``global.development=true``,
  the only way the defaults render), for values-production.yaml, and for values that switch every
  optional template branch on;
* every rendered manifest validates offline against the Kubernetes JSON schemas bundled in
  kubernetes-validate (strict: unknown fields fail), at a recent version and at the chart's minimum;
* the rendered objects fit together: selectors, probes, ports, security contexts, settings env,
  checksums, images;
* bad values fail with a message that names the value;
* the alerts and the dashboard only use the metric names of METRICS.md.

helm comes from scripts/ensure-helm (pinned; built with ``go install`` on first use, ~5 minutes,
then cached in .cache/bin). Without Go the tests fail with that explanation; they never skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "fraudstream"
PRODUCTION_VALUES = CHART / "values-production.yaml"

#: Kubernetes version the chart is rendered and validated for (inside kubernetes-validate's range).
KUBE_VERSION = "1.34.0"
#: The oldest version Chart.yaml's kubeVersion allows; rendered and validated too.
MIN_KUBE_VERSION = "1.27.0"
RELEASE = "fraud"
NAMESPACE = "fraud-test"

ENSURE_HELM_TIMEOUT = 900  # seconds: the first `go install` of helm takes ~5 min on 2 cores


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


#: Values that switch on every optional branch of the templates (and are valid outside development).
ALL_FEATURES: dict[str, Any] = {
    "global": {"imagePullSecrets": ["regcred"]},
    "commonLabels": {"team": "fraud"},
    "commonAnnotations": {"owner": "fraud-team"},
    "image": {"digest": "sha256:" + "ab" * 32},
    "settings": {
        "kafka": {
            "bootstrap_servers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
            "topic_prefix": "test.",
            "partitions": 6,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "fraudstream",
        },
        "scoring": {"review_cost": 3.5, "model_ref": "challenger"},
        "api": {"max_body_bytes": 2_000_000},
        "training": {"retrain_every_labels": 12_345},
        "stream": {
            "group_id": "test.workers",
            "batch_max": 2_000,
            "source_idle_ms": 1_000.0,
            "checkpoint_interval_s": 12.5,
            "session_timeout_ms": 45_000,
        },
    },
    "kafka": {"sasl": {"password": "sasl-secret"}, "tls": {"caSecret": "kafka-ca"}},
    "secrets": {
        "apiKeys": {"bank-a": [sha256_hex("key-a1"), sha256_hex("key-a2")]},
        "tokenizationKey": "t" * 40,
    },
    "registry": {
        "type": "s3",
        "s3": {
            "endpoint": "http://minio.storage.svc:9000",
            "region": "us-east-1",
            "bucket": "fraud-models",
            "accessKeyId": "AKIAEXAMPLE",
            "secretAccessKey": "example-secret",
        },
    },
    "api": {
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
        "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "fraud.example.com"}],
            "tls": [{"secretName": "fraud-tls", "hosts": ["fraud.example.com"]}],
        },
        "extraEnv": [{"name": "LOG_LEVEL", "value": "debug"}],
    },
    "worker": {"replicaCount": 6, "persistence": {"enabled": False}},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "prometheusRule": {"enabled": True},
    },
    "networkPolicy": {
        "api": {"allowExternal": False, "from": [{"namespaceSelector": {}}]},
        "extraEgress": [{"ports": [{"port": 4317, "protocol": "TCP"}]}],
    },
}


@dataclass
class Render:
    """One ``helm template`` run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    docs: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet")]

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, pod spec) of every workload's template and of bare Pods (the helm test)."""
        specs = [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in self.workloads()]
        specs += [(p["metadata"]["name"], p["spec"]) for p in self.of_kind("Pod")]
        return specs


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """helm, pinned in scripts/ensure-helm and built on first use; a clear failure without Go."""
    script = REPO / "scripts" / "ensure-helm"
    try:
        proc = subprocess.run(
            [str(script)], capture_output=True, text=True, timeout=ENSURE_HELM_TIMEOUT, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/ensure-helm did not finish within {ENSURE_HELM_TIMEOUT} s")
    if proc.returncode != 0:
        hint = (
            ""
            if shutil.which("go")
            else " Go is not on PATH: install Go 1.24+ (https://go.dev/dl/)."
        )
        pytest.fail(
            f"cannot get helm: scripts/ensure-helm exited {proc.returncode}.{hint}\n{proc.stderr}",
            pytrace=False,
        )
    helm = Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    assert helm.is_file(), f"scripts/ensure-helm printed {proc.stdout!r} but {helm} is missing"
    return helm


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's own config/cache/data dirs in a temp dir: tests never touch the user's helm setup."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }


@pytest.fixture(scope="session")
def run_helm(
    helm_bin: Path, helm_env: dict[str, str]
) -> Callable[..., subprocess.CompletedProcess]:
    def run(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess:
        argv = [str(helm_bin), *(str(chart) if a == "{chart}" else a for a in args)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=helm_env)

    return run


@pytest.fixture(scope="session")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], str]:
    """Write a values dict to a file for ``-f``; the same dict gives the same file."""
    folder = tmp_path_factory.mktemp("values")
    cache: dict[str, str] = {}

    def write(values: dict[str, Any]) -> str:
        text = yaml.safe_dump(values, sort_keys=True)
        if text not in cache:
            path = folder / f"values-{len(cache)}.yaml"
            path.write_text(text)
            cache[text] = str(path)
        return cache[text]

    return write


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., subprocess.CompletedProcess]) -> Callable[..., Render]:
    """``render(*helm_args, kube_version=..., chart=...)``: a cached ``helm template``."""
    cache: dict[tuple[Any, ...], Render] = {}

    def do(*args: str, kube_version: str = KUBE_VERSION, chart: Path = CHART) -> Render:
        key = (args, kube_version, chart)
        if key not in cache:
            proc = run_helm(
                "template",
                RELEASE,
                "{chart}",
                "--namespace",
                NAMESPACE,
                "--kube-version",
                kube_version,
                *args,
                chart=chart,
            )
            result = Render(args, proc.returncode, proc.stdout, proc.stderr)
            if proc.returncode == 0:
                result.docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
            cache[key] = result
        return cache[key]

    return do


def _ok(result: Render) -> Render:
    assert result.returncode == 0, f"helm template {' '.join(result.args)} failed:\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def dev_render(render: Callable[..., Render]) -> Render:
    """Default values plus the development flag (the only way defaults render)."""
    return _ok(render("--set", "global.development=true"))


@pytest.fixture(scope="session")
def prod_render(render: Callable[..., Render]) -> Render:
    return _ok(render("-f", str(PRODUCTION_VALUES)))


@pytest.fixture(scope="session")
def all_features_render(
    render: Callable[..., Render], values_file: Callable[[dict[str, Any]], str]
) -> Render:
    return _ok(render("-f", values_file(ALL_FEATURES)))


@pytest.fixture(scope="session")
def min_kube_render(render: Callable[..., Render]) -> Render:
    return _ok(render("--set", "global.development=true", kube_version=MIN_KUBE_VERSION))


@pytest.fixture(params=["dev", "prod", "all-features"])
def any_render(request: pytest.FixtureRequest) -> Iterator[Render]:
    """Each of the main renders in turn."""
    name = {"dev": "dev_render", "prod": "prod_render", "all-features": "all_features_render"}
    yield request.getfixturevalue(name[request.param])


# ------------------------------------------------------------------------------------------------
# Shared readers
# ------------------------------------------------------------------------------------------------

COMPONENT_PORTS = {"api": 8000, "worker": 8001, "trainer": 8002}
SETTINGS_SECTIONS = ("kafka", "scoring", "api", "training", "stream")
#: Settings fields the chart sets itself (not values under `settings`), and why.
CHART_MANAGED = {
    ("kafka", "sasl_password"): "secret: kafka.sasl",
    ("kafka", "ssl_ca_location"): "mounted CA: kafka.tls.caSecret",
    ("scoring", "registry"): "registry.type: the PVC or the S3 cache path",
    ("scoring", "registry_s3"): "registry.s3.*",
    ("api", "host"): "0.0.0.0 in a pod",
    ("api", "port"): "8000, the port of the Service and probes",
    ("api", "api_keys"): "secret: secrets.*",
    ("api", "tokenization_key"): "secret: secrets.*",
    ("stream", "instance_id"): "the pod name (downward API): stable per StatefulSet ordinal",
    ("stream", "state_dir"): "/var/lib/fraudstream/state, the worker's state volume",
    ("stream", "http_host"): "0.0.0.0 in a pod",
    ("stream", "http_port"): "8001, the port of the worker's probes and ServiceMonitor",
    ("training", "http_host"): "0.0.0.0 in a pod",
    ("training", "http_port"): "8002, the port of the trainer's probes and ServiceMonitor",
}
#: Settings fields that have no meaning on Kubernetes (the local broker of `fraudstream kafka up`).
NOT_IN_CHART = {
    ("kafka", field_name)
    for field_name in (
        "local_version",
        "local_port",
        "local_controller_port",
        "local_dir",
        "jar_cache",
        "local_heap",
    )
}


def load_values_doc() -> Any:
    """tests/helm/values_doc.py (a script too), loaded by path: test folders are not packages."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fraudstream_values_doc", Path(__file__).with_name("values_doc.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing, enough for these tests: maps merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels + In/NotIn/Exists/DoesNotExist expressions)."""
    if not matches(selector.get("matchLabels", {}), labels):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        ok = {
            "In": lambda k=key, v=values: labels.get(k) in v,
            "NotIn": lambda k=key, v=values: labels.get(k) not in v,
            "Exists": lambda k=key: k in labels,
            "DoesNotExist": lambda k=key: k not in labels,
        }[operator]()
        if not ok:
            return False
    return True


def container_env(result: Render, container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with: envFrom ConfigMaps, then env (secrets resolved
    from the chart's Secret when it holds them, else a placeholder naming the secret; downward-API
    fields as a placeholder naming the field)."""
    import base64

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(result.one("ConfigMap", name)["data"])
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in result.of_kind("Secret")}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            data = secrets.get(ref["name"], {})
            if ref["key"] in data:
                env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
            else:
                env[entry["name"]] = f"<secret {ref['name']}/{ref['key']}>"
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = f"<field {entry['valueFrom']['fieldRef']['fieldPath']}>"
    return env


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return containers[0]


def documented_metrics() -> dict[str, str]:
    """name -> type, from the table of METRICS.md."""
    import re

    rows = re.findall(
        r"^\| `(fraudstream_[a-z0-9_]+)` \| ([a-z]+)", (CHART / "METRICS.md").read_text(), re.M
    )
    assert rows, "no metric rows found in METRICS.md"
    return dict(rows)


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$namespace": "fraud",
    "$bank": ".*",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (Grafana variables replaced first)."""
    import promql_parser

    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def undocumented(names: set[str]) -> set[str]:
    """Names that are neither a METRICS.md metric nor a series of one of its histograms."""
    metrics = documented_metrics()
    histograms = {name for name, kind in metrics.items() if kind == "histogram"}
    allowed = set(metrics) | {
        f"{name}_{suffix}" for name in histograms for suffix in ("bucket", "sum", "count")
    }
    return names - allowed


def base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and documented_metrics().get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return name


def dashboard_exprs() -> list[str]:
    """Every ``expr`` of the dashboard, plus the metric reads of its variable queries."""
    import json
    import re

    dashboard = json.loads((CHART / "dashboards" / "fraudstream.json").read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if match := re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip()):
            exprs.append(match[1])
    return exprs


def alert_rules(result: Render) -> dict[str, dict[str, Any]]:
    rule = result.one("PrometheusRule")
    return {
        r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r
    }


# ------------------------------------------------------------------------------------------------
# helm lint and schema validation of the rendered manifests
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--set", "global.development=true"), id="dev"),
        pytest.param(("-f", str(PRODUCTION_VALUES)), id="prod"),
    ],
)
def test_helm_lint_strict(run_helm: Callable[..., Any], args: tuple[str, ...]) -> None:
    proc = run_helm("lint", "--strict", "--kube-version", KUBE_VERSION, "{chart}", *args)
    assert proc.returncode == 0, f"helm lint failed:\n{proc.stdout}\n{proc.stderr}"
    assert "0 chart(s) failed" in proc.stdout


def test_helm_lint_all_features(
    run_helm: Callable[..., Any], values_file: Callable[[dict[str, Any]], str]
) -> None:
    proc = run_helm(
        "lint",
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        "{chart}",
        "-f",
        values_file(ALL_FEATURES),
    )
    assert proc.returncode == 0, f"helm lint failed:\n{proc.stdout}\n{proc.stderr}"


def test_defaults_alone_do_not_render(render: Callable[..., Render]) -> None:
    """No working secrets (nor Kafka) by default: plain defaults must be refused."""
    result = render()
    assert result.returncode != 0
    assert (
        "secrets.apiKeys" in result.stderr and "settings.kafka.bootstrap_servers" in result.stderr
    )


#: Custom resources: no Kubernetes schema; checked field by field in their own tests.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize(
    "which", ["dev_render", "prod_render", "all_features_render", "min_kube_render"]
)
def test_manifests_validate_against_kubernetes_schemas(
    request: pytest.FixtureRequest, which: str
) -> None:
    import kubernetes_validate

    result: Render = request.getfixturevalue(which)
    version = MIN_KUBE_VERSION if which == "min_kube_render" else KUBE_VERSION
    errors = []
    for doc in result.docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    assert not errors, "invalid manifests:\n" + "\n".join(errors)


VARIANTS = {
    "trainer-off": ["--set", "trainer.enabled=false"],
    "no-network-policy-no-pdb": [
        "--set", "networkPolicy.enabled=false",
        "--set", "api.pdb.create=false",
        "--set", "worker.pdb.create=false",
    ],
    "existing-service-account": [
        "--set", "serviceAccount.create=false",
        "--set", "serviceAccount.name=fraud-sa",
    ],
    "long-fullname": ["--set", "fullnameOverride=" + "f" * 50],
    "existing-claim-no-storage-class": [
        "--set", "registry.volume.existingClaim=models",
        "--set", "worker.persistence.storageClass=-",
    ],
    "no-dashboard": ["--set", "metrics.dashboard.enabled=false"],
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_render_valid_manifests(render: Callable[..., Render], variant: str) -> None:
    import kubernetes_validate

    result = _ok(render("--set", "global.development=true", *VARIANTS[variant]))
    for doc in result.docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert len(doc["metadata"]["name"]) <= 63
    # A StatefulSet's pods get the label controller-revision-hash=<name>-<10 characters>.
    assert len(result.one("StatefulSet")["metadata"]["name"]) <= 52
    kinds = {d["kind"] for d in result.docs}
    if variant == "trainer-off":
        assert {component(w) for w in result.workloads()} == {"api", "worker"}
    if variant == "no-network-policy-no-pdb":
        assert not {"NetworkPolicy", "PodDisruptionBudget"} & kinds
    if variant == "existing-service-account":
        assert "ServiceAccount" not in kinds
        assert {
            s["serviceAccountName"] for _, s in result.pod_specs() if "serviceAccountName" in s
        } == {"fraud-sa"}
    if variant == "existing-claim-no-storage-class":
        assert "PersistentVolumeClaim" not in kinds
        claim = result.one("StatefulSet")["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["storageClassName"] == ""
        volumes = result.one("Deployment", "-api")["spec"]["template"]["spec"]["volumes"]
        registry = next(v for v in volumes if v["name"] == "registry")
        assert registry["persistentVolumeClaim"]["claimName"] == "models"
    if variant == "no-dashboard":
        assert not [
            c for c in result.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
        ]


def test_kind_inventory(
    dev_render: Render, prod_render: Render, all_features_render: Render
) -> None:
    """One resource per kind and component, and the optional ones only when asked for."""
    dev_kinds = sorted({d["kind"] for d in dev_render.docs})
    assert dev_kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Pod",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    for result in (prod_render, all_features_render):
        kinds = {d["kind"] for d in result.docs}
        assert {"HorizontalPodAutoscaler", "Ingress", "ServiceMonitor", "PrometheusRule"} <= kinds
        assert "PersistentVolumeClaim" not in kinds  # S3 registry: no registry PVC
    assert "Secret" not in {d["kind"] for d in prod_render.docs}  # every secret is an existing one
    names = [(d["kind"], d["metadata"]["name"]) for r in (dev_render, prod_render) for d in r.docs]
    assert all(len(name) <= 63 for _, name in names)


def test_all_objects_in_release_namespace_with_standard_labels(any_render: Render) -> None:
    for doc in any_render.docs:
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "fraudstream"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# ------------------------------------------------------------------------------------------------
# The objects fit together
# ------------------------------------------------------------------------------------------------


def test_selectors_match_pod_labels(any_render: Render) -> None:
    result = any_render
    workloads = result.workloads()
    assert {component(w) for w in workloads} == {"api", "worker", "trainer"}
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        assert matches(selector, pod_labels(workload)), workload["metadata"]["name"]
        # Selectors are immutable: nothing that changes between releases may be in them.
        assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(selector)
        others = [w for w in workloads if w is not workload]
        assert not any(matches(selector, pod_labels(o)) for o in others), "selectors overlap"

    def selected(selector: dict[str, Any], *, expressions: bool = False) -> list[str]:
        check = label_selector_matches if expressions else matches
        return [w["metadata"]["name"] for w in workloads if check(selector, pod_labels(w))]

    for service in result.of_kind("Service"):
        targets = selected(service["spec"]["selector"])
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {targets}"
        workload = next(w for w in workloads if w["metadata"]["name"] == targets[0])
        port_names = {p["name"] for p in main_container(workload)["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for pdb in result.of_kind("PodDisruptionBudget"):
        assert len(selected(pdb["spec"]["selector"], expressions=True)) == 1
    for policy in result.of_kind("NetworkPolicy"):
        assert len(selected(policy["spec"]["podSelector"], expressions=True)) == 1
    for hpa in result.of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == (
            "Deployment",
            result.one("Deployment", "-api")["metadata"]["name"],
        )
        assert "replicas" not in result.one("Deployment", "-api")["spec"]  # the HPA owns it

    statefulset = result.one("StatefulSet")
    headless = result.one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert matches(headless["spec"]["selector"], pod_labels(statefulset))

    services = {s["metadata"]["name"]: s for s in result.of_kind("Service")}
    for ingress in result.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services
                assert backend["port"]["name"] in {
                    p["name"] for p in services[backend["name"]]["spec"]["ports"]
                }
                assert path["path"] == "/v1", "only the bank-facing routes go through the Ingress"
    for monitor in result.of_kind("ServiceMonitor"):
        watched = [
            s
            for s in services.values()
            if label_selector_matches(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert sorted(component(s) for s in watched) == ["api", "trainer", "worker"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in watched)
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_probes_point_at_the_real_routes_and_ports(any_render: Render) -> None:
    for workload in any_render.workloads():
        name = component(workload)
        container = main_container(workload)
        assert container["args"] == [name], "one image, the verb picks the service"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": COMPONENT_PORTS[name]}
        expected = {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert ports[get["port"]] == COMPONENT_PORTS[name], f"{name} {probe} port"
    api_service = any_render.one("Service", "-api")
    assert api_service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    config = any_render.one("ConfigMap", f"{RELEASE}-fraudstream")
    assert config["data"]["FRAUD_API__PORT"] == "8000"
    assert config["data"]["FRAUD_API__HOST"] == "0.0.0.0"


def test_helm_test_pod_curls_readyz_and_metrics_of_the_api(any_render: Render) -> None:
    pod = any_render.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    url = next(e["value"] for e in container["env"] if e["name"] == "API_URL")
    service = any_render.one("Service", "-api")
    assert (
        url
        == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
    )
    script = " ".join(container["command"] + container["args"])
    assert '"$API_URL/readyz"' in script and '"$API_URL/metrics"' in script
    assert "curl --fail" in script
    # Allowed through the API's NetworkPolicy when the API is not open to everyone.
    client_label = f"{RELEASE}-fraudstream-client"
    assert pod["metadata"]["labels"][client_label] == "true"


def test_security_context_is_restricted_on_every_pod_and_container(any_render: Render) -> None:
    """The Kubernetes "restricted" Pod Security Standard, checked field by field."""
    for name, spec in any_render.pod_specs():
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{name}: {host}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert not any("hostPath" in v for v in volumes.values()), name
        containers = spec["containers"] + spec.get("initContainers", [])
        for container in containers:
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged") is not True, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, where
            assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] in (
                "RuntimeDefault",
                "Localhost",
            ), where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], (
                f"{where}: /tmp must be a writable emptyDir"
            )
            for limit in ("memory",):
                assert container["resources"]["limits"][limit], where
            for request in ("cpu", "memory"):
                assert container["resources"]["requests"][request], where


def test_every_settings_section_reaches_every_pod(any_render: Render) -> None:
    for workload in any_render.workloads():
        env = container_env(any_render, main_container(workload))
        sections = {key.split("__")[0] for key in env if key.startswith("FRAUD_") and "__" in key}
        expected = {f"FRAUD_{section.upper()}" for section in SETTINGS_SECTIONS}
        assert expected <= sections, f"{workload['metadata']['name']} lacks {expected - sections}"


@pytest.mark.parametrize("which", ["dev", "prod", "all-features"])
def test_rendered_env_parses_into_the_settings_the_values_asked_for(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """The env every pod gets is read back by scoring.settings.Settings, value for value."""
    import json

    from scoring.settings import Settings

    result: Render = request.getfixturevalue(
        {"dev": "dev_render", "prod": "prod_render", "all-features": "all_features_render"}[which]
    )
    override = {
        "dev": {},
        "prod": yaml.safe_load(PRODUCTION_VALUES.read_text()),
        "all-features": ALL_FEATURES,
    }[which]
    wanted = merged(default_values(), override)["settings"]
    for workload in result.workloads():
        env = container_env(result, main_container(workload))
        for key in [k for k in os.environ if k.startswith("FRAUD_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        for section, fields in wanted.items():
            for field_name, value in fields.items():
                got = getattr(getattr(settings, section), field_name)
                assert got == value, (
                    f"{workload['metadata']['name']}: settings.{section}.{field_name}"
                )
        assert str(settings.scoring.registry) == "/var/lib/fraudstream/registry"
        assert (settings.api.host, settings.api.port) == ("0.0.0.0", 8000)
        assert str(settings.stream.state_dir) == "/var/lib/fraudstream/state"
        assert (settings.stream.http_host, settings.stream.http_port) == ("0.0.0.0", 8001)
        if component(workload) == "worker":  # its pod name, from the downward API
            assert settings.stream.instance_id == "<field metadata.name>"
        else:
            assert settings.stream.instance_id is None
        if component(workload) == "api":
            assert settings.api.api_keys is not None and settings.api.tokenization_key is not None
            if "<secret" not in settings.api.api_keys.get_secret_value():
                keys = json.loads(settings.api.api_keys.get_secret_value())
                assert keys and all(
                    len(digest) == 64 for digests in keys.values() for digest in digests
                )
        else:  # least privilege: only the API holds the API keys and the tokenization key
            assert settings.api.api_keys is None and settings.api.tokenization_key is None
        if wanted["kafka"]["security_protocol"].startswith("SASL_"):
            assert settings.kafka.sasl_password is not None
        if override.get("kafka", {}).get("tls", {}).get("caSecret"):
            assert settings.kafka.ssl_ca_location == "/etc/fraudstream/kafka-ca/ca.crt"


def test_development_placeholders_are_the_documented_ones(dev_render: Render) -> None:
    import json

    env = container_env(dev_render, main_container(dev_render.one("Deployment", "-api")))
    assert json.loads(env["FRAUD_API__API_KEYS"]) == {
        "dev-bank": [sha256_hex("fraudstream-dev-key")]
    }
    readme = (CHART / "README.md").read_text()
    assert "fraudstream-dev-key" in readme and "dev-bank" in readme


def test_registry_mounts(dev_render: Render, prod_render: Render) -> None:
    for workload in dev_render.workloads():  # volume registry: one RWX PVC, written by the trainer
        spec = workload["spec"]["template"]["spec"]
        mount = next(m for m in main_container(workload)["volumeMounts"] if m["name"] == "registry")
        assert mount["mountPath"] == "/var/lib/fraudstream/registry"
        assert mount.get("readOnly", False) is (component(workload) != "trainer")
        volume = next(v for v in spec["volumes"] if v["name"] == "registry")
        assert (
            volume["persistentVolumeClaim"]["claimName"]
            == dev_render.one("PersistentVolumeClaim")["metadata"]["name"]
        )
    assert dev_render.one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    for workload in prod_render.workloads():  # S3 registry: the path is a local cache
        spec = workload["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "registry")
        assert "emptyDir" in volume
        env = container_env(prod_render, main_container(workload))
        assert env["FRAUD_SCORING__REGISTRY_S3__BUCKET"] == "example-fraudstream-models"
        assert (
            env["FRAUD_SCORING__REGISTRY_S3__ACCESS_KEY_ID"]
            == "<secret fraudstream-s3/access-key-id>"
        )


def test_worker_statefulset_state_and_replicas(
    dev_render: Render, prod_render: Render, all_features_render: Render
) -> None:
    for result, replicas, persistent in (
        (dev_render, 1, True),
        (prod_render, 3, True),
        (all_features_render, 6, False),
    ):
        statefulset = result.one("StatefulSet")
        assert statefulset["spec"]["replicas"] == replicas
        mounts = {m["name"]: m["mountPath"] for m in main_container(statefulset)["volumeMounts"]}
        assert mounts["state"] == "/var/lib/fraudstream/state"
        claims = [
            c["metadata"]["name"] for c in statefulset["spec"].get("volumeClaimTemplates", [])
        ]
        volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
        if persistent:
            assert claims == ["state"] and "state" not in volumes
            assert (
                statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"]
                == "Delete"
            )
        else:
            assert not claims and "emptyDir" in volumes["state"]


def test_worker_runs_the_stream_worker_with_its_real_settings(any_render: Render) -> None:
    """`fraudstream worker` gets its identity, state dir and port as FRAUD_STREAM__* settings."""
    statefulset = any_render.one("StatefulSet")
    container = main_container(statefulset)
    assert container["args"] == ["worker"]
    instance = [e for e in container["env"] if e["name"] == "FRAUD_STREAM__INSTANCE_ID"]
    assert instance == [
        {
            "name": "FRAUD_STREAM__INSTANCE_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }
    ], "static group membership, transactional id and checkpoint folder: the stable pod name"
    env = container_env(any_render, container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["FRAUD_STREAM__STATE_DIR"] == mounts["state"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["FRAUD_STREAM__HTTP_PORT"]) == ports["http"] == COMPONENT_PORTS["worker"]
    assert env["FRAUD_STREAM__HTTP_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # SIGTERM: finish the batch (its Kafka transaction times out after 60 s), checkpoint, close.
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 90
    # Only the worker has an identity; the other pods must not pretend to be one.
    for workload in any_render.workloads():
        if component(workload) != "worker":
            names = {e["name"] for e in main_container(workload).get("env", [])}
            assert "FRAUD_STREAM__INSTANCE_ID" not in names, workload["metadata"]["name"]


def test_every_fraud_variable_is_a_setting(any_render: Render) -> None:
    """No invented variables: every FRAUD_<SECTION>__<FIELD> a pod gets is a field of
    scoring/settings.py (or one the chart sets for a contract listed in CHART_MANAGED)."""
    from scoring.settings import Settings

    settings = Settings()
    fields = {
        (section, name)
        for section in type(settings).model_fields
        for name in type(getattr(settings, section)).model_fields
    }
    for workload in any_render.workloads():
        for name in container_env(any_render, main_container(workload)):
            if not name.startswith("FRAUD_"):
                continue
            section, _, rest = name.removeprefix("FRAUD_").lower().partition("__")
            key = (section, rest.split("__")[0])
            assert key in fields or key in CHART_MANAGED, (
                f"{workload['metadata']['name']}: {name} is not a setting"
            )


def test_checksum_annotations_roll_pods_on_config_and_secret_changes(
    render: Callable[..., Render], dev_render: Render
) -> None:
    def annotations(result: Render) -> dict[str, dict[str, str]]:
        return {
            component(w): w["spec"]["template"]["metadata"]["annotations"]
            for w in _ok(result).workloads()
        }

    base = annotations(dev_render)
    for notes in base.values():
        for key in ("checksum/config", "checksum/secret", "checksum/secret-refs"):
            assert len(notes[key]) == 64 and int(notes[key], 16) >= 0
    dev = ("--set", "global.development=true")
    config_changed = annotations(render(*dev, "--set", "settings.scoring.review_cost=4"))
    secret_changed = annotations(render(*dev, "--set", "secrets.tokenizationKey=" + "k" * 32))
    ref_changed = annotations(render(*dev, "--set", "secrets.existingSecret=other"))
    for name in base:
        assert config_changed[name]["checksum/config"] != base[name]["checksum/config"]
        assert config_changed[name]["checksum/secret"] == base[name]["checksum/secret"]
        assert secret_changed[name]["checksum/secret"] != base[name]["checksum/secret"]
        assert secret_changed[name]["checksum/config"] == base[name]["checksum/config"]
        assert ref_changed[name]["checksum/secret-refs"] != base[name]["checksum/secret-refs"]


def test_images_are_pinned_never_latest(any_render: Render) -> None:
    import re

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] not in ("", "latest") and re.fullmatch(
        r"\d+\.\d+\.\d+.*", str(chart["appVersion"])
    )
    for name, spec in any_render.pod_specs():
        for container in spec["containers"] + spec.get("initContainers", []):
            image = container["image"]
            repository, _, digest = image.partition("@")
            if digest:
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
                continue
            last = repository.rsplit("/", 1)[-1]
            assert ":" in last, f"{name}: {image} has no tag"
            tag = last.split(":", 1)[1]
            assert tag and tag != "latest", f"{name}: {image}"
    api_image = main_container(any_render.one("Deployment", "-api"))["image"]
    assert api_image in (
        f"ghcr.io/fraudstream/fraudstream:{chart['appVersion']}",
        "ghcr.io/fraudstream/fraudstream@sha256:" + "ab" * 32,  # ALL_FEATURES: by digest
        "ghcr.io/fraudstream/fraudstream:"
        + yaml.safe_load(PRODUCTION_VALUES.read_text())["image"]["tag"],  # pinned there
    )


def test_network_policies(
    dev_render: Render, prod_render: Render, all_features_render: Render
) -> None:
    def policy(result: Render, name: str) -> dict[str, Any]:
        return result.one("NetworkPolicy", f"-{name}")["spec"]

    open_api = policy(dev_render, "api")
    assert open_api["policyTypes"] == ["Ingress", "Egress"]
    assert any("from" not in rule for rule in open_api["ingress"]), "API open to all by default"
    for name in ("worker", "trainer"):
        assert all("from" in rule for rule in policy(dev_render, name)["ingress"])
    closed_api = policy(prod_render, "api")
    assert all("from" in rule for rule in closed_api["ingress"])
    egress_ports = {
        port["port"]
        for rule in policy(all_features_render, "worker")["egress"]
        for port in rule["ports"]
    }
    # DNS, Kafka, the S3 endpoint's own port (from registry.s3.endpoint), extraEgress
    assert {53, 9092, 9093, 9094, 443, 9000, 4317} <= egress_ports


# ------------------------------------------------------------------------------------------------
# Bad values are refused, naming the value
# ------------------------------------------------------------------------------------------------

DEV = ("--set", "global.development=true")
PROD = ("-f", str(PRODUCTION_VALUES))

BAD_VALUES = [
    pytest.param(
        (*DEV, "--set", "worker.replicaCont=2"), ["at '/worker'", "'replicaCont'"], id="typo-key"
    ),
    pytest.param(
        (*DEV, "--set", "settings.kafka.bootstrap_server=kafka:9092"),
        ["at '/settings/kafka'", "'bootstrap_server'"],
        id="typo-settings-field",
    ),
    pytest.param(
        (*DEV, "--set", "api.replicaCount=two"),
        ["at '/api/replicaCount'", "got string, want integer"],
        id="wrong-type",
    ),
    pytest.param(
        (*DEV, "--set-string", "networkPolicy.enabled=yes"),
        ["at '/networkPolicy/enabled'", "want boolean"],
        id="wrong-type-bool",
    ),
    pytest.param(
        (*DEV, "--set", "registry.type=nfs"),
        ["at '/registry/type'", "one of 'volume', 's3'"],
        id="bad-enum",
    ),
    pytest.param(
        (*DEV, "--set", "worker.replicaCount=7"),
        ["worker.replicaCount (7)", "twice settings.kafka.partitions (3)", "hot standbys"],
        id="more-standbys-than-partitions",
    ),
    pytest.param(
        (*PROD, "--set", "worker.replicaCount=8"),
        ["worker.replicaCount (8)", "twice settings.kafka.partitions (3)"],
        id="more-standbys-than-partitions-prod",
    ),
    pytest.param(
        (*DEV, "--set", "settings.stream.batch_max=0"),
        ["at '/settings/stream/batch_max'"],
        id="stream-batch-max-zero",
    ),
    pytest.param(
        (*DEV, "--set", "settings.stream.instance_id=worker-a"),
        ["at '/settings/stream'", "'instance_id'"],
        id="stream-instance-id-is-chart-managed",
    ),
    pytest.param(
        (*PROD, "--set", "secrets.existingSecret="),
        ["secrets.apiKeys", "secrets.tokenizationKey", "secrets.existingSecret"],
        id="missing-secrets-in-production",
    ),
    pytest.param(
        (*PROD, "--set", "settings.kafka.bootstrap_servers=null"),
        ["settings.kafka.bootstrap_servers is required"],
        id="missing-kafka-in-production",
    ),
    pytest.param(
        (
            *PROD,
            "--set",
            "kafka.sasl.existingSecret=",
            "--set",
            "settings.kafka.sasl_mechanism=null",
        ),
        [
            "settings.kafka.sasl_mechanism is required",
            "kafka.sasl.existingSecret (or kafka.sasl.password)",
        ],
        id="sasl-without-credentials",
    ),
    pytest.param(
        (
            *DEV,
            "--set",
            "settings.kafka.security_protocol=PLAINTEXT",
            "--set",
            "kafka.tls.caSecret=ca",
        ),
        ["kafka.tls.caSecret is set"],
        id="ca-without-tls",
    ),
    pytest.param(
        (*DEV, "--set", "image.tag=latest"), ["image.tag must not be latest"], id="latest-tag"
    ),
    pytest.param(
        (*DEV, "--set", "tests.image.tag=latest"),
        ["tests.image.tag must not be latest"],
        id="latest-test-tag",
    ),
    pytest.param(
        (*DEV, "--set", "secrets.apiKeys.bank-a[0]=plain-text-key"),
        ["at '/secrets/apiKeys/bank-a/0'", "^[0-9a-f]{64}$"],
        id="api-key-not-a-sha256",
    ),
    pytest.param(
        (*DEV, "--set", "secrets.tokenizationKey=short"),
        ["at '/secrets/tokenizationKey'"],
        id="short-tokenization-key",
    ),
    pytest.param(
        (*DEV, "--set", "registry.type=s3"),
        ["registry.s3.bucket is required"],
        id="s3-without-bucket",
    ),
    pytest.param(
        (
            *PROD,
            "--set",
            "registry.type=volume",
            "--set",
            "registry.volume.accessModes={ReadWriteOnce}",
        ),
        ["registry.volume.accessModes must include ReadWriteMany"],
        id="rwo-registry-in-production",
    ),
    pytest.param(
        (*DEV, "--set", "containerSecurityContext.allowPrivilegeEscalation=true"),
        ["at '/containerSecurityContext/allowPrivilegeEscalation'"],
        id="privilege-escalation",
    ),
    pytest.param(
        (
            *DEV,
            "--set",
            "api.autoscaling.enabled=true",
            "--set",
            "api.autoscaling.minReplicas=5",
            "--set",
            "api.autoscaling.maxReplicas=2",
        ),
        ["api.autoscaling.minReplicas (5) must not exceed api.autoscaling.maxReplicas (2)"],
        id="hpa-min-above-max",
    ),
    pytest.param(
        (*DEV, "--set", "api.ingress.enabled=true"),
        ["api.ingress.hosts is empty"],
        id="ingress-without-hosts",
    ),
    pytest.param(
        (*DEV, "--set", "api.resources.requests.memory=lots"),
        ["at '/api/resources/requests/memory'"],
        id="bad-quantity",
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD_VALUES)
def test_bad_values_are_rejected_naming_the_value(
    render: Callable[..., Render], args: tuple[str, ...], expected: list[str]
) -> None:
    result = render(*args)
    assert result.returncode != 0, f"helm template {' '.join(args)} should have failed"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"


def test_every_mistake_is_reported_at_once(render: Callable[..., Render]) -> None:
    result = render(
        *PROD,
        "--set", "worker.replicaCount=9",
        "--set", "secrets.existingSecret=",
        "--set", "image.tag=latest",
        "--set", "registry.s3.bucket=",
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("\nfraudstream: ") == 4, result.stderr
    for text in ("worker.replicaCount (9)", "secrets.apiKeys", "image.tag", "registry.s3.bucket"):
        assert text in result.stderr
    schema = render(*DEV, "--set", "worker.replicaCont=2", "--set", "api.replicaCount=two")
    assert "'replicaCont'" in schema.stderr and "/api/replicaCount" in schema.stderr


# ------------------------------------------------------------------------------------------------
# Metrics: alerts and dashboard use only METRICS.md names
# ------------------------------------------------------------------------------------------------


def test_metrics_md_lists_the_contract() -> None:
    metrics = documented_metrics()
    assert set(metrics) == {
        "fraudstream_decisions_total",
        "fraudstream_degraded_decisions_total",
        "fraudstream_superseded_decisions_total",  # the API's, read_uncommitted (api/hub.py)
        "fraudstream_request_duration_seconds",
        "fraudstream_decision_transport_seconds",  # the API's, Kafka's share (api/hub.py)
        "fraudstream_stream_end_to_end_latency_seconds",
        "fraudstream_stream_stage_duration_seconds",
        "fraudstream_stream_events_total",
        "fraudstream_stream_dlq_total",
        "fraudstream_consumer_lag",
        "fraudstream_model_info",
        "fraudstream_cost_usd_total",
        "fraudstream_decision_cost_usd",  # the API's per-decision histogram (api/metrics.py)
        "fraudstream_drift_psi",
        "fraudstream_trainer_last_success_timestamp_seconds",
        "fraudstream_trainer_promotions_total",
        "fraudstream_trainer_refusals_total",
        "fraudstream_model_integrity_failures_total",
        # the trainer's own (training/trainer_metrics.py)
        "fraudstream_trainer_stage_duration_seconds",
        "fraudstream_trainer_candidate_metric",
        "fraudstream_trainer_event_time_seconds",
        "fraudstream_trainer_window_rows",
        # the stream worker's own (stream/metrics.py)
        "fraudstream_stream_state_events_total",
        "fraudstream_stream_batch_size",
        "fraudstream_stream_rejected_labels_total",
        "fraudstream_stream_unmatched_labels_total",
        "fraudstream_stream_late_events_total",
        "fraudstream_stream_resent_transactions_total",
        "fraudstream_shadow_model_info",
        "fraudstream_stream_watermark_timestamp_seconds",
        "fraudstream_model_swaps_total",
        "fraudstream_stream_cpu_seconds_total",
        "fraudstream_stream_checkpoints_total",
        "fraudstream_stream_restores_total",
        # state bounds and backpressure (docs/stream.md, "Memory bounds")
        "fraudstream_feature_state_entities",
        "fraudstream_feature_state_bytes",
        "fraudstream_feature_state_evictions_total",
        "fraudstream_stream_buffered_messages",
        "fraudstream_stream_paused_partitions",
        "fraudstream_stream_transaction_stalls_total",
    }
    for name, kind in metrics.items():
        assert kind in ("counter", "gauge", "histogram")
        assert name.endswith("_total") == (kind == "counter"), name


#: Documented as exported by the worker, not exported by stream/metrics.py yet.
WORKER_METRICS_PLANNED: set[str] = set()


def metrics_md_rows() -> dict[str, dict[str, str]]:
    """name -> {type, labels, exporters, meaning} from the table of METRICS.md."""
    rows: dict[str, dict[str, str]] = {}
    for line in (CHART / "METRICS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`fraudstream_"):
            name, kind, labels, exporters, meaning = cells
            rows[name.strip("`")] = {
                "type": kind.split()[0],
                "labels": labels,
                "exporters": exporters,
                "meaning": meaning,
            }
    return rows


def documented_labels(cell: str) -> set[str]:
    """Label names of a METRICS.md labels cell: the backticked words outside parentheses."""
    import re

    depth, outside = 0, []
    for char in cell:
        depth += char == "("
        if depth == 0:
            outside.append(char)
        depth -= char == ")"
    return set(re.findall(r"`([a-z_]+)`", "".join(outside)))


def test_worker_metrics_match_metrics_md() -> None:
    """What stream/metrics.py registers is what METRICS.md says the worker exports: names, types,
    labels; and the stage label values are stream/metrics.py's STAGES."""
    import re

    from prometheus_client.metrics import MetricWrapperBase

    from stream.metrics import STAGES, WorkerMetrics

    exported: dict[str, tuple[str, set[str]]] = {}
    for metric in vars(WorkerMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            exported[name] = (family.type, set(metric._labelnames))
    rows = metrics_md_rows()
    documented = {name for name, row in rows.items() if "worker" in row["exporters"].split(" (")[0]}
    assert set(exported) == documented - WORKER_METRICS_PLANNED, (
        f"only in stream/metrics.py: {set(exported) - documented}; "
        f"only in METRICS.md: {documented - WORKER_METRICS_PLANNED - set(exported)}"
    )
    for name, (kind, labels) in exported.items():
        assert rows[name]["type"] == kind, name
        assert documented_labels(rows[name]["labels"]) == labels, name
    for name in WORKER_METRICS_PLANNED:
        assert "not exported yet" in rows[name]["exporters"], name
    stage_cell = rows["fraudstream_stream_stage_duration_seconds"]["labels"]
    assert re.findall(r"`([a-z_]+)`", stage_cell)[1:] == list(STAGES)
    source = (REPO / "stream" / "worker.py").read_text()
    assert set(re.findall(r'stage\.labels\(stage="([a-z_]+)"\)', source)) <= set(STAGES)


def test_dashboard_is_valid_json_and_queries_only_documented_metrics() -> None:
    import json

    dashboard = json.loads((CHART / "dashboards" / "fraudstream.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "fraudstream"
    exprs = dashboard_exprs()
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert not undocumented(names), f"{expr!r} uses {undocumented(names)} (not in METRICS.md)"
        used |= {base_metric(n) for n in names}
    assert used == set(documented_metrics()), (
        f"not on the dashboard: {set(documented_metrics()) - used}"
    )
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_configmap_carries_the_file(dev_render: Render) -> None:
    import json

    config = dev_render.one("ConfigMap", "-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config["data"]["fraudstream.json"])
    assert shipped == json.loads((CHART / "dashboards" / "fraudstream.json").read_text())


REQUIRED_ALERTS = {
    "FraudstreamDegradedDecisionsHigh": {
        "fraudstream_degraded_decisions_total",
        "fraudstream_decisions_total",
    },
    "FraudstreamConsumerLagHigh": {"fraudstream_consumer_lag"},
    "FraudstreamFeatureDrift": {"fraudstream_drift_psi"},
    "FraudstreamTrainerStale": {"fraudstream_trainer_last_success_timestamp_seconds"},
    "FraudstreamModelIntegrityFailure": {"fraudstream_model_integrity_failures_total"},
    "FraudstreamLateEvents": {
        "fraudstream_stream_late_events_total",
        "fraudstream_stream_state_events_total",
    },
    "FraudstreamStateRebuilt": {"fraudstream_stream_restores_total"},
}


def test_prometheus_rule_alerts(prod_render: Render) -> None:
    rules = alert_rules(prod_render)
    assert set(REQUIRED_ALERTS) <= set(rules)
    for alert, rule in rules.items():
        names = metric_names(rule["expr"])
        assert not undocumented(names), f"{alert} uses {undocumented(names)} (not in METRICS.md)"
        if alert in REQUIRED_ALERTS:
            assert REQUIRED_ALERTS[alert] <= names, alert
        assert f'namespace="{NAMESPACE}"' in rule["expr"], f"{alert} is not scoped to the release"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # Prometheus templates survive helm: they reach Prometheus as written.
    assert (
        "{{ $labels.bank }}" in rules["FraudstreamDegradedDecisionsHigh"]["annotations"]["summary"]
    )
    assert (
        prod_render.one("PrometheusRule")["metadata"]["labels"]["release"]
        == "kube-prometheus-stack"
    )


def test_alert_thresholds_come_from_values(render: Callable[..., Render]) -> None:
    result = _ok(
        render(
            *PROD,
            "--set", "metrics.prometheusRule.consumerLag=1234",
            # --set reads 0.3 as a string (helm parses only integers); --set-json keeps the number.
            "--set-json", "metrics.prometheusRule.driftPsi=0.3",
            "--set", "metrics.prometheusRule.trainerStalenessSeconds=7200",
            "--set-json", "metrics.prometheusRule.lateEventRatio=0.02",
        )
    )  # fmt: skip
    rules = alert_rules(result)
    assert rules["FraudstreamLateEvents"]["expr"].strip().endswith("> 0.02")
    rebuilt = rules["FraudstreamStateRebuilt"]["expr"]
    # a rebuild at process start creates its series at 1: increase() alone would never see it
    assert 'source="rebuild"' in rebuilt and "unless" in rebuilt and "offset 30m" in rebuilt
    assert rules["FraudstreamConsumerLagHigh"]["expr"].strip().endswith("> 1234")
    assert rules["FraudstreamFeatureDrift"]["expr"].strip().endswith("> 0.3")
    assert rules["FraudstreamTrainerStale"]["expr"].strip().endswith("> 7200")


# ------------------------------------------------------------------------------------------------
# Values: documented, mirrored in the schema and in scoring/settings.py
# ------------------------------------------------------------------------------------------------


def test_every_value_is_documented_and_the_readme_table_is_current() -> None:
    doc = load_values_doc()
    values = default_values()
    params = doc.params()
    keys = [p.key for p in params]
    assert len(keys) == len(set(keys)), "a value is documented twice"
    for key in keys:
        doc.lookup(values, key)  # KeyError names a @param without a value
    for leaf in doc.leaves(values):
        assert any(leaf == key or leaf.startswith(key + ".") for key in keys), (
            f"{leaf} has no @param"
        )
    readme = (CHART / "README.md").read_text()
    assert doc.readme_with_table(readme) == readme, (
        "README values table is stale: run .venv/bin/python tests/helm/values_doc.py"
    )


#: Schema properties that may be set but have no default on purpose.
OPTIONAL_WITHOUT_DEFAULT = (
    "resources.limits.cpu",  # no CPU limit by default: CFS throttling shows up as p99 latency
)


def test_values_schema_mirrors_values_yaml() -> None:
    """Every default value has a schema entry (else the strict schema would reject the defaults'
    own keys) and every schema property has a default (so it is documented)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], values: Any, path: str) -> None:
        properties = node.get("properties")
        if properties is None or not isinstance(values, dict):
            return
        if node.get("additionalProperties") is False:
            assert set(values) <= set(properties), (
                f"{path}: {set(values) - set(properties)} not in the schema"
            )
        for key, child in properties.items():
            dotted = f"{path}.{key}" if path else key
            optional = path == "global" or dotted.endswith(OPTIONAL_WITHOUT_DEFAULT)
            if not optional:
                assert key in values, f"{dotted} is in the schema but has no default"
            walk(child, values.get(key), f"{path}.{key}" if path else key)

    walk(schema, default_values(), "")


def test_settings_values_mirror_scoring_settings() -> None:
    """values.settings.<section>.<field> is a real settings field with the code's default, and
    every settings field is either a value, set by the chart, or meaningless on Kubernetes."""
    from scoring.settings import Settings

    values = default_values()["settings"]
    assert tuple(values) == SETTINGS_SECTIONS
    for section in SETTINGS_SECTIONS:
        model = type(getattr(Settings(), section))
        fields = model.model_fields
        for field_name, default in values[section].items():
            assert field_name in fields, (
                f"settings.{section}.{field_name} is not a field of {model.__name__}"
            )
            code_default = fields[field_name].get_default(call_default_factory=True)
            assert default == code_default, (
                f"settings.{section}.{field_name}: values.yaml says {default!r}, "
                f"scoring/settings.py says {code_default!r}"
            )
        for field_name in fields:
            assert (
                field_name in values[section]
                or (section, field_name) in CHART_MANAGED
                or (section, field_name) in NOT_IN_CHART
            ), (
                f"{model.__name__}.{field_name} is not in the chart: add settings.{section}."
                f"{field_name} to values.yaml and values.schema.json (or list it in "
                "CHART_MANAGED / NOT_IN_CHART of tests/helm/test_chart.py)"
            )


def test_notes_tell_the_operator_how_to_reach_the_api(
    render: Callable[..., Render], tmp_path: Path
) -> None:
    """NOTES.txt only renders on install; a copy of the chart renders it into a ConfigMap."""
    chart = tmp_path / "fraudstream"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | quote }}\n'
    )

    def notes(*args: str) -> str:
        result = _ok(render(*args, chart=chart))
        return next(d for d in result.docs if d["metadata"]["name"] == "notes")["data"]["notes"]

    dev = notes(*DEV)
    assert f"port-forward svc/{RELEASE}-fraudstream-api 8000:8000" in dev
    assert f"helm test {RELEASE}" in dev
    assert "WARNING: global.development=true" in dev and "fraudstream-dev-key" in dev
    assert "1 for 3 partition(s): 1 deciding; checkpoints on PVCs" in dev
    prod = notes(*PROD)
    assert "https://fraud-api.example.com/v1/" in prod and "WARNING" not in prod
    standbys = notes(*DEV, "--set", "worker.replicaCount=5")  # more workers than partitions: fine
    assert "5 for 3 partition(s): 3 deciding, 2 hot standby" in standbys


# ------------------------------------------------------------------------------------------------
# The image
# ------------------------------------------------------------------------------------------------


def test_dockerfile_follows_the_image_contract() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    lines = [
        line.strip()
        for line in dockerfile.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage build expected"
    final = lines[stages[-1] :]
    build_args = dict(
        line.split(None, 1)[1].split("=", 1)
        for line in lines
        if line.startswith("ARG ") and "=" in line
    )
    base = final[0].split()[1]
    for name, default in build_args.items():
        base = base.replace("${" + name + "}", default)
    assert base.startswith("python:3.11-slim"), base
    final_text = "\n".join(final)
    assert "gcc" in final_text and "libc6-dev" in final_text, "models are compiled at runtime"
    assert "USER 10001" in final_text
    assert "NUMBA_CACHE_DIR=" in final_text
    assert 'ENTRYPOINT ["fraudstream"]' in final_text
    assert ":latest" not in dockerfile
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored or {".venv", ".git", ".cache"} <= {i.strip("/") for i in ignored}
