"""deploy/kubernetes renders and validates offline, and stays wired to the service and its rules.

The base is rendered by :func:`render_base`, a renderer of exactly the kustomize
features the base uses (``resources``, ``namespace``, metadata-only ``labels``;
Debian's ``kubectl`` is too old to render the ``labels`` field, so no binary checks
it in CI). The core objects are checked against the Kubernetes schemas that kubernetes-validate
ships; the PodMonitor and PrometheusRule against the prometheus-operator CRD
schemas as shipped (generated pydantic models) by cloudcoil-models-prometheus-operator,
made strict so an unknown field fails. Nothing is fetched.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from taskforce.api._serving import longest_shutdown_seconds
from taskforce.api.cli import _parser
from taskforce.config import Settings, load_settings
from tests.support import yaml_files
from tests.support.binaries import run_promtool

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the base targets, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
_KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources"}
#: What the Deployment's comment tells an overlay with more than one replica to add.
_POSTGRES_ENV = {
    "TASKFORCE_STATE__BACKEND": "postgres",
    "TASKFORCE_STATE__DSN": "postgresql://taskforce@db.example:5432/taskforce",
}


def render_base(base: Path = BASE) -> list[dict[str, Any]]:
    """Render a kustomization that uses only resources, namespace and metadata labels."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(kustomization) - _KUSTOMIZE_KEYS
    assert set() == unsupported, "render_base does not implement these kustomize fields"
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        assert {"pairs"} == set(entry), "only metadata labels (no selectors, no templates)"
        labels.update(entry["pairs"])
    rendered = []
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((base / name).read_text(encoding="utf-8")):
            metadata = document.setdefault("metadata", {})
            if "namespace" in kustomization:
                metadata["namespace"] = kustomization["namespace"]
            if labels:
                metadata["labels"] = {**metadata.get("labels", {}), **labels}
            rendered.append(document)
    return rendered


@cache
def _rendered() -> tuple[dict[str, Any], ...]:
    """The base, rendered once per run: parsing its YAML is most of what these tests cost."""
    return tuple(render_base())


def _by_kind(kind: str) -> dict[str, Any]:
    """A fresh copy of the one object of ``kind`` (callers may change it)."""
    (found,) = [d for d in _rendered() if d["kind"] == kind]
    return copy.deepcopy(found)


def _container() -> dict[str, Any]:
    (container,) = _by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


@cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_prometheusrule", BASE / "generate_prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prestop_seconds() -> float:
    """How long the container's preStop hook sleeps, read from its command."""
    command = " ".join(_container()["lifecycle"]["preStop"]["exec"]["command"])
    found = re.search(r"\bsleep\(([0-9.]+)\)", command)
    assert found is not None, command
    return float(found.group(1))


def _strict(node: Any) -> Any:
    """Reject properties a schema does not name (as kubernetes-validate's --strict does)."""
    if isinstance(node, dict):
        node = {key: _strict(value) for key, value in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [_strict(item) for item in node]
    return node


@cache
def _crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    # Imported here, not at the top: the generated models take seconds to import,
    # which every test run would pay at collection.
    from cloudcoil.models.prometheus_operator import v1 as operator

    model = {"PodMonitor": operator.PodMonitor, "PrometheusRule": operator.PrometheusRule}[kind]
    schema = _strict(model.model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


class TestRender:
    def test_objects_namespace_and_labels(self) -> None:
        """The base renders to its five objects, all in the namespace, all labelled part-of."""
        rendered = render_base()
        kinds = ["Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "PrometheusRule"]
        assert kinds == [d["kind"] for d in rendered]
        assert {"taskforce"} == {d["metadata"]["namespace"] for d in rendered}
        assert {"taskforce"} == {
            d["metadata"]["labels"]["app.kubernetes.io/part-of"] for d in rendered
        }

    def test_guide_creates_the_namespace_before_applying(self) -> None:
        """The base names a namespace it does not create: the guide creates it first."""
        kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
        assert "Namespace" not in {d["kind"] for d in render_base()}
        guide = (ROOT / "docs" / "operator-guide.md").read_text(encoding="utf-8")
        kubernetes = guide[guide.index("\n## Kubernetes\n") : guide.index("\n## Logs\n")]
        create = kubernetes.index(f"kubectl create namespace {kustomization['namespace']}\n")
        assert create < kubernetes.index("kubectl apply -k deploy/kubernetes\n")


class TestKubernetesSchemas:
    @pytest.mark.parametrize("version", K8S_VERSIONS)
    @pytest.mark.parametrize("kind", ["Deployment", "Service", "PodDisruptionBudget"])
    def test_core_objects_validate_strictly(self, kind: str, version: str) -> None:
        """Deployment, Service and PodDisruptionBudget fit the Kubernetes schema, unknown
        fields rejected."""
        kubernetes_validate.validate(_by_kind(kind), version, strict=True)

    def test_a_misspelt_field_is_caught(self) -> None:
        """The strict check would catch a typo such as `readinesProbe`."""
        deployment = _by_kind("Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["readinesProbe"] = container.pop("readinessProbe")
        with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
            kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.slow  # the first check imports the generated operator models: seconds
class TestOperatorSchemas:
    @pytest.mark.parametrize("kind", ["PodMonitor", "PrometheusRule"])
    def test_custom_resources_validate_strictly(self, kind: str) -> None:
        """PodMonitor and PrometheusRule fit the prometheus-operator CRD schemas."""
        errors = [e.message for e in _crd_validator(kind).iter_errors(_by_kind(kind))]
        assert [] == errors

    def test_a_misspelt_field_is_caught(self) -> None:
        """An endpoint field the CRD does not know (`scrapeInterval`) is rejected."""
        monitor = _by_kind("PodMonitor")
        monitor["spec"]["podMetricsEndpoints"][0]["scrapeInterval"] = "15s"
        errors = [e.message for e in _crd_validator("PodMonitor").iter_errors(monitor)]
        assert any("scrapeInterval" in message for message in errors)


class TestWiring:
    def test_settings_from_the_deployment_load(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every TASKFORCE_* variable of the Deployment is a setting with a valid value."""
        for variable in _container()["env"]:
            monkeypatch.setenv(variable["name"], variable["value"])
        settings = load_settings()
        ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
        assert ports["metrics"] == settings.metrics.port
        assert Path("/var/lib/taskforce/state") == settings.state_dir

    def test_command_line_serves_all_interfaces_on_the_http_port(self) -> None:
        """`taskforce serve` binds :: on the port named http: every address of the pod,
        IPv6 and IPv4, so an IPv6-only or dual-stack cluster reaches it too (0.0.0.0 is
        IPv4 only; that :: takes IPv4 too is tested with the listener)."""
        container = _container()
        assert ["taskforce"] == container["command"]
        args = _parser().parse_args(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ("serve", "::", ports["http"]) == (args.command, args.host, args.port)

    def test_one_worker_whatever_the_image_sets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The pod runs one process, its one metrics port scraped, even with WEB_CONCURRENCY."""
        from taskforce.api._supervisor import resolve_workers

        monkeypatch.setenv("WEB_CONCURRENCY", "4")
        args = _parser().parse_args(_container()["args"])
        assert 1 == resolve_workers(args.workers)

    def test_settings_load_beside_the_service_links(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The variables Kubernetes makes for the Service do not stop start-up.

        The pod turns service links off; where an overlay turns them back on (or
        another Service named taskforce-* lives in the namespace), they pass too.
        """
        assert _by_kind("Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False
        service = _by_kind("Service")
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        ip = "10.96.0.10"
        links = {f"{prefix}_SERVICE_HOST": ip}
        for port in service["spec"]["ports"]:
            number, proto = port["port"], port["protocol"]
            url = f"{proto.lower()}://{ip}:{number}"
            base = f"{prefix}_PORT_{number}_{proto}"
            links |= {
                f"{prefix}_SERVICE_PORT": str(number),
                f"{prefix}_SERVICE_PORT_{port['name'].upper()}": str(number),
                f"{prefix}_PORT": url,
                base: url,
                f"{base}_PROTO": proto.lower(),
                f"{base}_PORT": str(number),
                f"{base}_ADDR": ip,
            }
        for variable in _container()["env"]:
            monkeypatch.setenv(variable["name"], variable["value"])
        for name, value in links.items():
            monkeypatch.setenv(name, value)
        assert 9100 == load_settings().metrics.port

    def test_probes_ask_health_on_the_http_port(self) -> None:
        """Readiness and liveness probes GET /health on the http port."""
        container = _container()
        for probe in ("readinessProbe", "livenessProbe"):
            assert {"path": "/health", "port": "http"} == container[probe]["httpGet"]

    def test_selectors_find_the_pods(self) -> None:
        """The Service, the PodMonitor and the PodDisruptionBudget select the Deployment's pods."""
        pod_labels = _by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
        service = _by_kind("Service")["spec"]["selector"]
        monitor = _by_kind("PodMonitor")["spec"]["selector"]["matchLabels"]
        budget = _by_kind("PodDisruptionBudget")["spec"]["selector"]
        assert service.items() <= pod_labels.items()
        assert monitor.items() <= pod_labels.items()
        assert {"matchLabels"} == set(budget)
        assert budget["matchLabels"].items() <= pod_labels.items()

    def test_disruption_budget_lets_a_drain_through_one_pod_at_a_time(self) -> None:
        """A drain may evict one pod at a time, and never none: a budget that allowed no
        eviction of the base's one replica (minAvailable: 1) would block every drain of
        its node. A pod that is not ready may always be evicted."""
        budget = _by_kind("PodDisruptionBudget")["spec"]
        assert 1 == _by_kind("Deployment")["spec"]["replicas"]
        assert (None, 1) == (budget.get("minAvailable"), budget["maxUnavailable"])
        assert "AlwaysAllow" == budget["unhealthyPodEvictionPolicy"]

    def test_the_volume_is_bounded_and_holds_the_workspace_and_the_missions_in_flight(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every emptyDir has a sizeLimit, requested as ephemeral storage, with room for a
        full workspace (tools.max_workspace_bytes, which a file_write runs into as
        WorkspaceFull) and for every mission in flight to fill its session's state, three
        times over: past it the pod is evicted, not the node filled, and a workspace
        within its quota must not take the pod there."""
        settings = _deployment_settings(monkeypatch, {})
        pod = _by_kind("Deployment")["spec"]["template"]["spec"]
        empty_dirs = [v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v]
        assert empty_dirs
        limits = [_quantity_bytes(d["sizeLimit"]) for d in empty_dirs]
        requested = _container()["resources"]["requests"]["ephemeral-storage"]
        assert sum(limits) == _quantity_bytes(requested)
        in_flight = 3 * settings.api.max_missions_in_flight * settings.state.max_bytes
        assert sum(limits) >= settings.tools.max_workspace_bytes + in_flight

    def test_podmonitor_scrapes_the_metrics_port_as_job_taskforce(self) -> None:
        """The endpoint is the port named metrics; the job label is what the rules select."""
        spec = _by_kind("PodMonitor")["spec"]
        pod_labels = _by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
        assert [("metrics", "/metrics")] == [
            (e["port"], e["path"]) for e in spec["podMetricsEndpoints"]
        ]
        assert "taskforce" == pod_labels[spec["jobLabel"]]
        rules = (ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml").read_text(encoding="utf-8")
        assert 'job="taskforce"' in rules

    def test_podmonitor_scrapes_every_worker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Each worker's metrics port (metrics.port + i) is a named port the PodMonitor scrapes.

        A PodMonitor scrapes only the container ports it names, at its own path: a
        worker whose port is not declared, or a path other than metrics.path, is a
        worker nobody counts.
        """
        from taskforce.api._supervisor import resolve_workers

        for variable in _container()["env"]:
            monkeypatch.setenv(variable["name"], variable["value"])
        settings = load_settings()
        workers = resolve_workers(_parser().parse_args(_container()["args"]).workers, {})
        names = {p["containerPort"]: p["name"] for p in _container()["ports"]}
        assert settings.metrics.port is not None
        wanted = {names.get(settings.metrics.port + i) for i in range(workers)}
        endpoints = _by_kind("PodMonitor")["spec"]["podMetricsEndpoints"]
        assert wanted == {e["port"] for e in endpoints}
        assert {settings.metrics.path} == {e["path"] for e in endpoints}

    def test_writable_paths_are_on_writable_volumes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With a read-only root filesystem, state and workspace live on a writable volume."""
        for variable in _container()["env"]:
            monkeypatch.setenv(variable["name"], variable["value"])
        settings = load_settings()
        container = _container()
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {
            v["name"]: v for v in _by_kind("Deployment")["spec"]["template"]["spec"]["volumes"]
        }
        writable = [
            Path(m["mountPath"])
            for m in container["volumeMounts"]
            if not m.get("readOnly")
            and {"emptyDir", "persistentVolumeClaim"} & set(volumes[m["name"]])
        ]
        written = [settings.state_dir, settings.workspace_dir]
        if settings.metrics.targets_file is not None:  # and its lock file beside it
            written.append(settings.metrics.targets_file.parent)
        for path in written:
            assert path.is_absolute(), path  # relative would be the image's working directory
            assert any(path.is_relative_to(mount) for mount in writable), path

    def test_pod_runs_restricted_without_an_api_token(self) -> None:
        """The pod meets the "restricted" Pod Security Standard and mounts no API token.

        taskforce never calls the Kubernetes API; a token in the pod would only be a
        credential for whatever runs in it to find.
        """
        pod = _by_kind("Deployment")["spec"]["template"]["spec"]
        container = _container()["securityContext"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "RuntimeDefault" == pod["securityContext"]["seccompProfile"]["type"]
        assert container["allowPrivilegeEscalation"] is False
        assert ["ALL"] == container["capabilities"]["drop"]

    def test_prestop_hook_waits_before_the_signal(self) -> None:
        """A preStop hook sleeps a few seconds, so the pod leaves the endpoints before SIGTERM.

        An `exec` of the Python the image runs taskforce on: Kubernetes 1.29 has no
        built-in `sleep` action, and the image may have no `sleep` binary.
        """
        command = _container()["lifecycle"]["preStop"]["exec"]["command"]
        assert ["python3", "-c"] == command[:2]
        assert 3 <= _prestop_seconds() <= 15
        # the same program without the wait runs here: it is valid Python
        snippet = re.sub(r"\bsleep\([0-9.]+\)", "sleep(0)", command[2])
        done = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, timeout=30, check=False
        )
        assert 0 == done.returncode, done.stderr

    @pytest.mark.parametrize("overlay", [{}, _POSTGRES_ENV], ids=["file", "postgres"])
    def test_shutdown_drains_before_the_kill(
        self, monkeypatch: pytest.MonkeyPatch, overlay: dict[str, str]
    ) -> None:
        """The pod's grace period covers the preStop hook plus the longest shutdown.

        Kubernetes counts the hook in the grace period. With the PostgreSQL store the
        shutdown may wait state.timeout_seconds more to close connections to a database
        that does not answer (see Stopping).
        """
        settings = _deployment_settings(monkeypatch, overlay)
        pod = _by_kind("Deployment")["spec"]["template"]["spec"]
        longest = _prestop_seconds() + longest_shutdown_seconds(settings)
        assert pod["terminationGracePeriodSeconds"] > longest

    def test_guide_states_the_grace_periods_sum(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The guide's "N s in all" is the hook plus the longest shutdown, PostgreSQL's."""
        settings = _deployment_settings(monkeypatch, _POSTGRES_ENV)
        longest = _prestop_seconds() + longest_shutdown_seconds(settings)
        grace = _by_kind("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        guide = " ".join((ROOT / "docs" / "operator-guide.md").read_text(encoding="utf-8").split())
        kubernetes = guide[guide.index("## Kubernetes [deploy/") : guide.index("## Logs")]
        assert f"{longest:g} s in all" in kubernetes
        assert f"grace period ({grace} s)" in kubernetes


def _guide_kubernetes() -> str:
    """The guide's section "Kubernetes", its whitespace runs made single spaces."""
    guide = " ".join((ROOT / "docs" / "operator-guide.md").read_text(encoding="utf-8").split())
    return guide[guide.index("## Kubernetes [deploy/") : guide.index("## Logs")]


class TestGuideFigures:
    def test_resources_as_the_deployment_sets_them(self) -> None:
        """The guide names the container's CPU and memory requests and its memory limit
        (which its measured figures are held against) as the Deployment sets them."""
        resources = _container()["resources"]
        kubernetes = _guide_kubernetes()
        named = {
            f"`{name}: {value}`"
            for kind in ("requests", "limits")
            for name, value in resources[kind].items()
            if name != "ephemeral-storage"  # the emptyDir's paragraph names it
        }
        assert {"`cpu: 100m`", "`memory: 128Mi`", "`memory: 512Mi`"} == named
        assert [] == [text for text in sorted(named) if text not in kubernetes]

    def test_health_answers_inside_the_probes_timeouts(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """/health waits at most state.health_timeout_seconds for the store, less than each
        probe's timeoutSeconds, as the guide says: a store that does not answer must not
        fail the probes of every replica at once."""
        settings = _deployment_settings(monkeypatch, _POSTGRES_ENV)
        container = _container()
        timeouts = {p: container[p]["timeoutSeconds"] for p in ("readinessProbe", "livenessProbe")}
        assert settings.state.health_timeout_seconds < min(timeouts.values())
        said = (
            f"answered within {settings.state.health_timeout_seconds:g} s, inside the probes' "
            f"`timeoutSeconds` ({timeouts['readinessProbe']} s readiness, "
            f"{timeouts['livenessProbe']} s liveness)"
        )
        assert said in _guide_kubernetes()

    def test_table_figures_are_the_manifests(self) -> None:
        """The guide's table of the base says the hook, grace period, volume bound, ports and
        scrape interval the manifests set."""
        pod = _by_kind("Deployment")["spec"]["template"]["spec"]
        ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
        (size,) = [v["emptyDir"]["sizeLimit"] for v in pod["volumes"] if "emptyDir" in v]
        (endpoint,) = _by_kind("PodMonitor")["spec"]["podMetricsEndpoints"]
        (service_port,) = _by_kind("Service")["spec"]["ports"]
        kubernetes = _guide_kubernetes()
        said = [
            f"ports `http` ({ports['http']}) and `metrics` ({ports['metrics']},",
            f"a {_prestop_seconds():g} s `preStop` hook and a "
            f"{pod['terminationGracePeriodSeconds']} s grace period",
            f"bounded by a {size.removesuffix('Gi')} GiB `sizeLimit`",
            f"every pod every {endpoint['interval'].removesuffix('s')} s",
            f"`taskforce:{service_port['port']}`",
        ]
        assert [] == [text for text in said if text not in kubernetes]


def _quantity_bytes(quantity: str) -> int:
    """The bytes of a Kubernetes quantity such as ``1Gi`` or ``500M`` (whole numbers only)."""
    found = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert found is not None, quantity
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    units |= {"G": 10**9, "T": 10**12}
    return int(found.group(1)) * units.get(found.group(2) or "", 1)


def _deployment_settings(monkeypatch: pytest.MonkeyPatch, overlay: dict[str, str]) -> Settings:
    """The settings of the Deployment's container, with ``overlay``'s variables added."""
    env = {v["name"]: v["value"] for v in _container()["env"]} | overlay
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


class TestPrometheusRule:
    def test_checked_in_file_is_generated(self) -> None:
        """prometheusrule.yaml is what the generator makes of deploy/prometheus today."""
        checked_in = (BASE / "prometheusrule.yaml").read_text(encoding="utf-8")
        assert _generator().render() == checked_in, (
            "stale: run python deploy/kubernetes/generate_prometheusrule.py"
        )

    def test_holds_every_group_of_every_rule_file(self) -> None:
        """The groups are those of the rule files (alerts.yml, ...), not a copy of old ones."""
        files = _generator().rule_files()
        expected = [group for path in files for group in yaml_files.load(path)["groups"]]
        assert ROOT / "deploy" / "prometheus" / "alerts.yml" in files
        assert expected == _by_kind("PrometheusRule")["spec"]["groups"]

    @pytest.mark.integration
    def test_rules_pass_promtool(self, tmp_path: Path) -> None:
        """`promtool check rules` accepts the groups inside the PrometheusRule."""
        rules = tmp_path / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": _by_kind("PrometheusRule")["spec"]["groups"]}))
        done = run_promtool("check", "rules", str(rules))
        assert 0 == done.returncode, done.stdout + done.stderr
