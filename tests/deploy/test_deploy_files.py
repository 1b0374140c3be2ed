"""The deployment files are valid and agree with the code, checked offline.

`docker-compose.yml`, interpolated as Compose does, validates against the Compose Specification's
JSON schema (`compose-spec.json`, vendored from compose-go: see `compose-spec.NOTICE`); where
Debian's docker-compose 1.29.2 is installed (`.ci/run` installs it), `docker-compose config -q`
checks it a second time. The Kubernetes manifests pass `kubernetes-validate --strict` against the
bundled schemas of Kubernetes 1.33, and the rest is read as data: commands are the CLI's, every
service is health-checked, the balancer and Prometheus reach every replica, the dashboard covers
every metric family, and every `SHOAL_...` variable is a real setting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # types-jsonschema is not locked
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not locked
from typer.testing import CliRunner

from app.cli import app as cli
from app.settings import Settings
from tests.test_docs import setting_names

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
BOOTSTRAP_KEY = "shoal_0123456789abcdef_secret"

# The argv the suite itself runs: tests/test_end_to_end.py starts `serve`, tests/workers/
# test_celery.py starts `shoal worker`; `shoal db upgrade` is the README's migration command.
SERVE = ["shoal", "serve"]
WORKER = ["shoal", "worker"]
MIGRATE = ["shoal", "db", "upgrade"]
API_PORT, WORKER_METRICS_PORT = 8000, 9101  # the defaults of SHOAL_API__PORT and the worker's

# Every metric family the dashboard must chart (DESIGN.md, "Observability").
DASHBOARD_FAMILIES = [
    "shoal_http_request_duration_seconds_bucket",
    "shoal_stage_duration_seconds_bucket",
    "shoal_time_to_first_token_seconds_bucket",
    "shoal_generation_tokens_total",
    "shoal_embedding_cache_requests_total",
    "shoal_breaker_state",
    "shoal_queue_depth",
    "shoal_documents_total",
    "shoal_rate_limited_total",
    "shoal_route_decisions_total",
    "shoal_gpu_utilization_ratio",
    "shoal_gpu_memory_used_bytes",
    "shoal_mcp_tool_calls_total",
]


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    # PyYAML resolves the file's anchors and `<<` merges as Compose does.
    found: dict[str, dict[str, Any]] = load_yaml(COMPOSE)["services"]
    return found


def named(services: dict[str, dict[str, Any]], command: list[str]) -> list[str]:
    return sorted(name for name, svc in services.items() if svc.get("command") == command)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_documents(path):
            yield path, doc


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [
        doc
        for _, doc in manifests()
        if doc["kind"] == kind and doc.get("metadata", {}).get("name") == name
    ]
    assert len(found) == 1, f"expected one {kind} {name} in {K8S}, found {len(found)}"
    return found[0]


def run_tool(
    argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env
    )


# Compose


class InterpolationError(ValueError):
    """A required variable is missing, or a `${...}` is malformed: Compose refuses the file."""


VARIABLE = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?)([-+?])(.*))?", re.DOTALL)


def interpolate(value: Any, env: dict[str, str]) -> Any:  # Any: YAML data
    """``value`` with every string interpolated as the Compose Specification says (values only,
    never keys): ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}``, ``${VAR+other}``, nested."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    return substitute(value, env) if isinstance(value, str) else value


def substitute(text: str, env: dict[str, str]) -> str:
    out: list[str] = []
    at = 0
    while (dollar := text.find("$", at)) >= 0:
        out.append(text[at:dollar])
        after = text[dollar + 1 : dollar + 2]
        if after == "$":
            out.append("$")
            at = dollar + 2
        elif after == "{":
            end, depth = dollar + 2, 1
            while depth and end < len(text):
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            if depth:
                raise InterpolationError(f"unclosed ${{ in {text!r}")
            out.append(braced(text[dollar + 2 : end - 1], env))
            at = end
        elif name := VARIABLE.match(text, dollar + 1):
            out.append(env.get(name.group(), ""))
            at = name.end()
        else:  # not a variable: kept as written
            out.append("$")
            at = dollar + 1
    return "".join(out) + text[at:]


def braced(expression: str, env: dict[str, str]) -> str:
    match = BRACED.fullmatch(expression)
    if match is None:
        raise InterpolationError(f"invalid interpolation ${{{expression}}}")
    name, colon, operator, argument = match.groups()
    value = env.get(name)
    absent = value is None or (colon == ":" and value == "")
    if operator is None:
        return value or ""
    if operator == "-":
        return substitute(argument, env) if absent else str(value)
    if operator == "+":
        return "" if absent else substitute(argument, env)
    if absent:
        message = substitute(argument, env)
        raise InterpolationError(f"required variable {name} is missing: {message}")
    return str(value)


def compose_document(env: dict[str, str]) -> dict[str, Any]:
    """The file as Compose validates it: YAML (anchors and ``<<`` merged), then interpolated."""
    return dict(interpolate(load_yaml(COMPOSE), env))


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification() -> None:
    assert compose_errors(compose_document({"SHOAL_BOOTSTRAP_KEY": BOOTSTRAP_KEY})) == []


def test_the_compose_schema_check_catches_a_misspelt_key() -> None:
    document = compose_document({"SHOAL_BOOTSTRAP_KEY": BOOTSTRAP_KEY})
    healthcheck = document["services"]["api-1"]["healthcheck"]
    healthcheck["start_periods"] = healthcheck.pop("start_period")
    document["services"]["lb"]["depends_on"]["api-1"]["condition"] = "service_ready"
    errors = compose_errors(document)
    assert len(errors) == 2, errors
    assert any(e.startswith("services.api-1.healthcheck: 'start_periods'") for e in errors)
    assert any(e.startswith("services.lb.depends_on: ") and "service_ready" in e for e in errors)


@pytest.mark.parametrize("env", [{}, {"SHOAL_BOOTSTRAP_KEY": ""}], ids=["unset", "empty"])
def test_compose_refuses_to_start_without_a_bootstrap_key(env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match="SHOAL_BOOTSTRAP_KEY"):
        compose_document(env)


def test_compose_interpolation_follows_the_specification() -> None:
    env = {"SET": "x", "EMPTY": ""}
    cases = {
        "$$SET ${SET} $SET $": "$SET x x $",
        "${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET:-${SET:-y}}": "d  d x",
        "${SET:+r} ${EMPTY:+r} ${EMPTY+r} ${UNSET+r}": "r  r ",
        "${EMPTY?e}${SET:?e}": "x",
    }
    for text, expected in cases.items():
        assert substitute(text, env) == expected, text
    for bad in ("${EMPTY:?needed}", "${UNSET?needed}", "${SET", "${SET/x/y}"):
        with pytest.raises(InterpolationError):
            substitute(bad, env)


# Debian's docker-compose, where installed: a second, independent reading of the same file. The
# schema check above always runs; this one needs the binary, which `.ci/run` installs.
DOCKER_COMPOSE = shutil.which("docker-compose")


@pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="Debian's docker-compose is not installed (apt-get install docker-compose); "
    "the Compose Specification schema check still ran",
)
def test_debian_docker_compose_accepts_the_file_and_wants_a_bootstrap_key(
    tmp_path: Path,
) -> None:
    assert DOCKER_COMPOSE is not None
    # An empty env file and a bare environment: a developer's .env or exported SHOAL_... must
    # not decide the outcome.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    argv = [DOCKER_COMPOSE, "--env-file", str(env_file), "-f", str(COMPOSE)]
    argv += ["--profile", "rabbitmq", "config", "-q"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    valid = run_tool(argv, env={**env, "SHOAL_BOOTSTRAP_KEY": BOOTSTRAP_KEY})
    assert valid.returncode == 0, valid.stderr
    refused = run_tool(argv, env=env)
    assert refused.returncode != 0
    assert "SHOAL_BOOTSTRAP_KEY" in refused.stderr


def test_compose_runs_the_cli_commands_the_tests_run(services: dict[str, dict[str, Any]]) -> None:
    assert len(named(services, SERVE)) >= 2, "at least two API replicas"
    assert len(named(services, WORKER)) >= 1
    assert named(services, MIGRATE) == ["migrate"]
    runner = CliRunner()
    for argv in (SERVE, WORKER, MIGRATE):
        assert runner.invoke(cli, [*argv[1:], "--help"]).exit_code == 0, argv


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    missing = [
        name
        for name, svc in services.items()
        if name != "migrate"  # a one-shot: dependents wait for it to exit 0, not to be healthy
        and (not svc.get("healthcheck", {}).get("test") or svc["healthcheck"].get("disable"))
    ]
    assert missing == []
    assert services["migrate"].get("restart") == "no"


def test_api_and_workers_start_after_the_migration(services: dict[str, dict[str, Any]]) -> None:
    for name in named(services, SERVE) + named(services, WORKER):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        for backing in ("postgres", "redis", "qdrant"):
            assert depends_on[backing]["condition"] == "service_healthy", (name, backing)


def test_api_and_workers_run_distributed(services: dict[str, dict[str, Any]]) -> None:
    apis, workers = named(services, SERVE), named(services, WORKER)
    for name in apis + workers:
        env = environment(services[name])
        assert env["SHOAL_DATABASE_URL"].startswith("postgresql://"), name
        assert env["SHOAL_REDIS_URL"].startswith("redis://"), name
        assert re.match(r"(\$\{SHOAL_BROKER_URL:-)?(redis|amqp)://", env["SHOAL_BROKER_URL"]), name
        assert env["SHOAL_QDRANT_URL"].startswith("http://qdrant:"), name
        assert env["SHOAL_BOOTSTRAP_KEY"].startswith("${SHOAL_BOOTSTRAP_KEY:?"), name
    for name in apis:
        env = environment(services[name])
        assert env["SHOAL_API__HOST"] == "0.0.0.0", name  # noqa: S104  # inside a container
        # Each replica's fail-open share of a budget is 1/replicas: all of them together.
        assert env["SHOAL_LIMITS__REPLICAS"] == str(len(apis)), name


def test_each_worker_reserves_its_own_gpu(services: dict[str, dict[str, Any]]) -> None:
    used: list[str] = []
    for name in named(services, WORKER):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        (device,) = devices
        assert device["driver"] == "nvidia", name
        assert "gpu" in device["capabilities"], name
        # One process per GPU. Docker hands `count: N` the devices 0..N-1, so `count: 1` is GPU 0.
        ids = [str(i) for i in device["device_ids"]] if "device_ids" in device else ["0"]
        assert device.get("count", 1) == 1, name
        assert len(ids) == 1, name
        used += ids
    assert len(used) == len(set(used)), f"two workers share a GPU: {used}"


def test_load_balancer_uses_least_connections_over_every_api_replica(
    services: dict[str, dict[str, Any]],
) -> None:
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in services["lb"]["volumes"]
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    conf = re.sub(r"#.*", "", conf)
    (upstream,) = set(re.findall(r"proxy_pass\s+http://([\w-]+)\s*;", conf))
    body = re.search(rf"upstream\s+{upstream}\s*\{{([^}}]*)\}}", conf)
    assert body is not None, f"no upstream {upstream}"
    directives = [line.strip() for line in body.group(1).split(";")]
    assert "least_conn" in directives
    servers = {d.split()[1] for d in directives if d.startswith("server ")}
    assert servers == {f"{name}:{API_PORT}" for name in named(services, SERVE)}


def test_prometheus_scrapes_every_api_replica_and_every_worker(
    services: dict[str, dict[str, Any]],
) -> None:
    mount = "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in services["prometheus"]["volumes"]
    jobs = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    targets: set[str] = set()
    for job in jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            # Docker's DNS answers a service name with every container of the service.
            targets |= {f"{name}:{dns['port']}" for name in dns["names"]}
    for name in named(services, SERVE):
        assert f"{name}:{API_PORT}" in targets
    for name in named(services, WORKER):
        port = environment(services[name]).get("SHOAL_WORKERS__METRICS_PORT", WORKER_METRICS_PORT)
        assert f"{name}:{port}" in targets


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "shoal.json").read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]  # rows may hold their panels
    return [p for p in panels if p["type"] != "row"]


def defined_metrics() -> set[str]:
    names: set[str] = set()
    for package in ("app", "workers", "retrieval", "ingestion"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"[\"'](shoal_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_dashboard_charts_every_metric_family_the_code_exports() -> None:
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    missing = [family for family in DASHBOARD_FAMILIES if not any(family in e for e in exprs)]
    assert missing == []
    # And nothing it queries is a name the code does not export (histograms add the suffixes).
    defined = defined_metrics()
    queried = {name for e in exprs for name in re.findall(r"\bshoal_[a-z0-9_]+", e)}
    unknown = {
        n
        for n in queried
        if n not in defined and re.sub(r"_(bucket|count|sum)$", "", n) not in defined
    }
    assert unknown == set()


def test_grafana_provisions_the_datasource_and_dashboard_it_uses(
    services: dict[str, dict[str, Any]],
) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        for ds in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ds == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
    (provider,) = load_yaml(provisioning / "dashboards" / "shoal.yml")["providers"]
    volumes = services["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in volumes
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def deployment_environment_names(services: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Every environment variable the deployment files set, by the file that sets it."""
    names: dict[str, set[str]] = {COMPOSE.name: set()}
    for svc in services.values():
        names[COMPOSE.name] |= set(environment(svc))
    for path, doc in manifests():
        found = names.setdefault(path.name, set())
        found |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            found |= {env["name"] for env in container.get("env", [])}
    return names


def test_every_shoal_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    # Nested models can also be given whole, as JSON (SHOAL_ROUTES='{...}').
    known = set(setting_names(Settings)) | {f"SHOAL_{n.upper()}" for n in Settings.model_fields}
    unknown = {
        f"{file}: {name}"
        for file, names in deployment_environment_names(services).items()
        for name in names
        if name.startswith("SHOAL_") and name not in known
    }
    assert unknown == set()


def test_dockerfile_installs_the_lock_as_make_install_does() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install -q --no-compile --no-deps .*-r requirements\.lock", dockerfile)
    assert "--no-deps --no-build-isolation ." in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.MULTILINE):
        for name in source.split():
            assert (ROOT / name).exists(), f"Dockerfile copies a missing {name}"


# Kubernetes


def test_kubernetes_manifests_pass_strict_schema_validation() -> None:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    assert tool.exists(), "kubernetes-validate is missing: make dev (requirements-dev.lock)"
    # KEDA's ScaledObject and kustomize's file have no bundled schema (checked below).
    core = [
        (path, doc)
        for path, doc in manifests()
        if doc["kind"] not in {"ScaledObject", "Kustomization"}
    ]
    files = sorted({str(path) for path, _ in core})
    done = run_tool([str(tool), "--strict", "-k", KUBERNETES_VERSION, *files])
    assert done.returncode == 0, done.stdout + done.stderr
    # A kind without a schema only warns: every resource must have been validated.
    assert done.stdout.count("passed for resource") == len(core), done.stdout + done.stderr


def pod_container(kind: str, name: str) -> dict[str, Any]:
    (container,) = manifest(kind, name)["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def test_kubernetes_runs_the_cli_commands_with_shared_settings() -> None:
    containers = {
        "api": pod_container("Deployment", "shoal-api"),
        "worker": pod_container("Deployment", "shoal-worker"),
        "migrate": pod_container("Job", "shoal-migrate"),
    }
    assert containers["api"]["command"] == SERVE
    assert containers["worker"]["command"] == WORKER
    assert containers["migrate"]["command"] == MIGRATE
    config = manifest("ConfigMap", "shoal-config")["data"]
    secret = manifest("Secret", "shoal-secrets")["stringData"]
    assert config["SHOAL_API__HOST"] == "0.0.0.0"  # noqa: S104  # inside a pod
    for name in (
        "SHOAL_DATABASE_URL",
        "SHOAL_REDIS_URL",
        "SHOAL_BROKER_URL",
        "SHOAL_BOOTSTRAP_KEY",
    ):
        assert name in secret, name
    for role, container in containers.items():
        sources = {(next(iter(s)), next(iter(s.values()))["name"]) for s in container["envFrom"]}
        assert sources == {("configMapRef", "shoal-config"), ("secretRef", "shoal-secrets")}, role


def test_api_scales_on_cpu_and_workers_take_one_gpu_each() -> None:
    api = manifest("Deployment", "shoal-api")
    hpa = manifest("HorizontalPodAutoscaler", "shoal-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shoal-api",
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert pod_container("Deployment", "shoal-api")["resources"]["requests"]["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2
    # The fail-open divisor must cover as many replicas as the HPA may run.
    replicas = manifest("ConfigMap", "shoal-config")["data"]["SHOAL_LIMITS__REPLICAS"]
    assert int(replicas) == hpa["spec"]["maxReplicas"]
    worker = manifest("Deployment", "shoal-worker")
    limits = pod_container("Deployment", "shoal-worker")["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    # Autoscalers own the replica counts; a `replicas` in the manifest would reset them on apply.
    assert "replicas" not in api["spec"]
    assert "replicas" not in worker["spec"]


def test_keda_scales_workers_on_queue_depth_and_gpu_utilisation_not_cpu() -> None:
    scaled = manifest("ScaledObject", "shoal-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "shoal-worker"
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    triggers = spec["triggers"]
    assert not [t for t in triggers if t["type"] in {"cpu", "memory"}]
    queries = {t["metadata"]["query"] for t in triggers if t["type"] == "prometheus"}
    assert any("shoal_queue_depth" in q for q in queries)
    assert any("shoal_gpu_utilization_ratio" in q for q in queries)
    for trigger in triggers:
        assert float(trigger["metadata"]["threshold"]) > 0, trigger
    # One autoscaler per Deployment: KEDA makes its own HPA for the workers.
    hpas = [doc for _, doc in manifests() if doc["kind"] == "HorizontalPodAutoscaler"]
    assert all(h["spec"]["scaleTargetRef"]["name"] != "shoal-worker" for h in hpas)


def test_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    resources = load_yaml(K8S / "kustomization.yaml")["resources"]
    expected = sorted(
        p.name
        for p in K8S.glob("*.yaml")
        if p.name not in {"kustomization.yaml", "secret.example.yaml"}
    )
    assert sorted(resources) == expected
