"""deploy/kubernetes/ checked offline: every standard object against the Kubernetes schema
(kubernetes-validate, strict: no unknown field), KEDA's objects against KEDA's documented spec,
and every command, setting, secret, label and port they name against the project."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes

from contract.names import JOB_QUEUE
from contract.settings import Settings
from devstack.processes import ROOT
from tests.deploy.exported import exported_metric_names
from tests.deploy.test_dashboard_and_alerts import metric_names
from worker.ops.healthcheck import _parser as health_parser
from worker.ops.queue_metrics import _parser as exporter_parser

MANIFESTS = ROOT / "deploy" / "kubernetes"
#: The Kubernetes version the manifests are validated against (kubernetes-validate ships it).
KUBERNETES_VERSION = "1.31.0"
#: Kinds no Kubernetes schema knows: kustomize's file and KEDA's custom resources.
OWN_SCHEMA_KINDS = {"Kustomization", "ScaledObject", "TriggerAuthentication"}
#: Where the image keeps config/ (Dockerfile: WORKDIR /home/kling, COPY config ./config).
IMAGE_CONFIG_DIR = "/home/kling/config/"

# KEDA's documented fields (keda.sh/docs/2.15: reference/scaledobject-spec, scalers/rabbitmq-queue,
# scalers/prometheus, concepts/authentication), written out here because no schema package
# ships them.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
FALLBACK = {"failureThreshold", "replicas"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
TRIGGER_METADATA = {
    "rabbitmq": {
        "host", "protocol", "mode", "value", "activationValue", "queueName", "vhostName",
        "hostFromEnv", "unsafeSsl", "useRegex", "pageSize", "operation", "timeout",
        "excludeUnacknowledged",
    },
    "prometheus": {
        "serverAddress", "query", "queryParameters", "threshold", "activationThreshold",
        "namespace", "customHeaders", "ignoreNullValues", "unsafeSsl", "authModes",
    },
}  # fmt: skip
REQUIRED_METADATA = {
    "rabbitmq": {"queueName", "mode", "value"},
    "prometheus": {"serverAddress", "query", "threshold"},
}
TRIGGER_AUTHENTICATION_SPEC = {"secretTargetRef", "env", "configMapTargetRef", "podIdentity"}
SECRET_TARGET_REF = {"parameter", "name", "key"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def every_object() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name'] if 'metadata' in doc else ''}", doc)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for doc in documents(path)
    ]


def objects(kind: str, files: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if files is None or path.name in files
        for doc in documents(path)
        if doc["kind"] == kind
    }


def deployment(name: str) -> dict[str, Any]:
    return objects("Deployment")[name]


def container(name: str) -> dict[str, Any]:
    only: dict[str, Any]
    (only,) = deployment(name)["spec"]["template"]["spec"]["containers"]
    return only


def example_secrets() -> dict[str, dict[str, str]]:
    return {
        name: secret["stringData"]
        for name, secret in objects("Secret", ["secrets.example.yaml"]).items()
    }


@pytest.mark.parametrize(
    ("where", "manifest"),
    [(where, doc) for where, doc in every_object() if doc["kind"] not in OWN_SCHEMA_KINDS],
)
def test_each_object_is_valid_kubernetes(where: str, manifest: dict[str, Any]) -> None:
    kubernetes.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = yaml.safe_load(yaml.safe_dump(deployment("kling-worker")))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 150
    with pytest.raises(kubernetes.ValidationError, match="terminationGracePeriod"):
        kubernetes.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomize_applies_every_manifest_but_the_example_secrets() -> None:
    (kustomization,) = documents(MANIFESTS / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in MANIFESTS.glob("*.yaml")}

    assert listed == on_disk - {"kustomization.yaml", "secrets.example.yaml"}
    assert kustomization["namespace"] == objects("Namespace")["kling"]["metadata"]["name"]


def test_every_setting_in_the_config_map_is_real_and_none_is_secret() -> None:
    data = objects("ConfigMap")["kling-settings"]["data"]
    fields = {name.upper() for name in Settings.model_fields}
    secrets = set(example_secrets()["kling-secrets"])

    assert set(data) - fields <= {"AWS_DEFAULT_REGION"}
    assert not set(data) & secrets
    assert not set(data) & {"KLING_API_KEY", "KLING_SECRET_KEY", "CELERY_BROKER_URL", "REDIS_URL"}
    Settings(_env_file=None, **{name.lower(): value for name, value in data.items()})


def test_every_secret_a_manifest_reads_is_in_the_example() -> None:
    secrets = example_secrets()
    for name, manifest in objects("Deployment").items():
        pod = manifest["spec"]["template"]["spec"]
        for each in pod["containers"]:
            for source in each.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, name
            for variable in each.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], (name, ref)
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name
    # Secrets come from Secrets only: no literal one in any manifest that is applied.
    applied = "\n".join(
        (MANIFESTS / path).read_text()
        for path in documents(MANIFESTS / "kustomization.yaml")[0]["resources"]
    )
    for value in secrets["kling-secrets"].values():
        assert value not in applied


def test_the_accounts_file_is_mounted_from_its_secret() -> None:
    worker = container("kling-worker")
    env = {variable["name"]: variable.get("value") for variable in worker["env"]}
    volumes = {
        v["name"]: v for v in deployment("kling-worker")["spec"]["template"]["spec"]["volumes"]
    }
    (mount,) = [m for m in worker["volumeMounts"] if volumes[m["name"]].get("secret")]
    accounts = example_secrets()["kling-accounts"]

    assert volumes[mount["name"]]["secret"]["secretName"] == "kling-accounts"
    assert mount["readOnly"] is True
    directory, _, filename = env["KLING_ACCOUNTS_FILE"].rpartition("/")
    assert directory == mount["mountPath"]
    assert filename in accounts
    assert tomllib.loads(accounts[filename])["accounts"][0]["name"] == "default"


def test_the_worker_outlives_its_longest_call_when_stopped() -> None:
    timeout_s = float(objects("ConfigMap")["kling-settings"]["data"]["KLING_TIMEOUT_SECONDS"])
    grace_s = deployment("kling-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]

    # One call can take two timeouts (a JWT re-sign and its retry), plus S3 and the publish.
    assert grace_s >= 2 * timeout_s + 30
    assert container("kling-worker")["command"] == ["kling-worker", "-l", "INFO"]


def test_the_workers_liveness_survives_a_broker_outage_and_readiness_needs_the_broker() -> None:
    worker = container("kling-worker")
    liveness = worker["livenessProbe"]["exec"]["command"]
    readiness = worker["readinessProbe"]["exec"]["command"]

    assert liveness[0] == readiness[0] == "kling-worker-health"
    assert health_parser().parse_args(liveness[1:]).liveness
    assert not health_parser().parse_args(readiness[1:]).liveness
    # The probe's own timeout fits inside Kubernetes' one.
    assert (
        float(liveness[liveness.index("--timeout") + 1]) < worker["livenessProbe"]["timeoutSeconds"]
    )
    assert worker["startupProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("name", ["kling-worker", "kling-queue-exporter", "kling-flower"])
def test_each_container_has_resources_and_runs_unprivileged(name: str) -> None:
    pod = deployment(name)["spec"]["template"]["spec"]
    each = container(name)

    assert each["resources"]["requests"]["memory"]
    assert each["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert each["securityContext"]["allowPrivilegeEscalation"] is False
    assert "livenessProbe" in each
    assert "readinessProbe" in each


@pytest.mark.parametrize("name", ["kling-worker", "kling-queue-exporter"])
def test_prometheus_finds_each_exporter_on_its_real_port(name: str) -> None:
    template = deployment(name)["spec"]["template"]
    ports = {port["name"]: port["containerPort"] for port in container(name)["ports"]}
    annotated = int(template["metadata"]["annotations"]["prometheus.io/port"])

    assert ports["metrics"] == annotated
    if name == "kling-worker":
        assert annotated == int(objects("ConfigMap")["kling-settings"]["data"]["METRICS_PORT"])
    else:
        command = container(name)["command"]
        assert command[0] == "kling-queue-exporter"
        assert exporter_parser().parse_args(command[1:]).port == annotated


def test_flower_is_behind_basic_auth_and_inside_the_cluster() -> None:
    flower = container("kling-flower")
    env = {variable["name"]: variable for variable in flower["env"]}
    service = objects("Service")["kling-flower"]
    conf = next(arg for arg in flower["command"] if arg.startswith("--conf="))

    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == "kling-secrets"
    assert service["spec"]["type"] == "ClusterIP"
    assert (ROOT / "config" / conf.removeprefix(f"--conf={IMAGE_CONFIG_DIR}")).is_file()
    assert flower["livenessProbe"]["httpGet"]["path"] == "/healthcheck"  # open without login


def test_the_disruption_budget_and_services_select_real_pods() -> None:
    for name, selecting in [
        *objects("PodDisruptionBudget").items(),
        *objects("Service").items(),
    ]:
        selector = selecting["spec"]["selector"]
        labels = selector.get("matchLabels", selector)
        pods = [
            d for d in objects("Deployment").values()
            if labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(pods) == 1, name
    budget = objects("PodDisruptionBudget")["kling-worker"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_the_scaled_object_uses_only_kedas_documented_fields() -> None:
    (scaled,) = objects("ScaledObject").values()
    spec = scaled["spec"]

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    assert set(spec["scaleTargetRef"]) <= SCALE_TARGET_REF
    assert set(spec["fallback"]) == FALLBACK
    assert set(spec["advanced"]) <= ADVANCED
    assert set(spec["advanced"]["horizontalPodAutoscalerConfig"]) <= HPA_CONFIG
    assert 0 < spec["minReplicaCount"] <= spec["maxReplicaCount"]
    for trigger in spec["triggers"]:
        assert set(trigger) <= TRIGGER
        documented = TRIGGER_METADATA[trigger["type"]]
        assert set(trigger["metadata"]) <= documented, set(trigger["metadata"]) - documented
        assert REQUIRED_METADATA[trigger["type"]] <= set(trigger["metadata"])
        # KEDA reads every metadata value as a string.
        assert all(isinstance(value, str) for value in trigger["metadata"].values())


def test_the_scaled_object_scales_the_workers_on_the_job_queue() -> None:
    (scaled,) = objects("ScaledObject").values()
    triggers = {trigger["type"]: trigger for trigger in scaled["spec"]["triggers"]}
    rabbitmq, prometheus = triggers["rabbitmq"], triggers["prometheus"]
    (auth,) = objects("TriggerAuthentication").values()

    assert scaled["spec"]["scaleTargetRef"]["name"] == "kling-worker"
    assert rabbitmq["metadata"]["queueName"] == JOB_QUEUE
    assert rabbitmq["metadata"]["mode"] == "QueueLength"
    # AMQP: the queue length without RabbitMQ's management plugin.
    assert rabbitmq["metadata"]["protocol"] == "amqp"
    assert rabbitmq["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert set(auth["spec"]) <= TRIGGER_AUTHENTICATION_SPEC
    (ref,) = auth["spec"]["secretTargetRef"]
    assert set(ref) == SECRET_TARGET_REF
    assert ref["parameter"] == "host"
    assert ref["key"] in example_secrets()[ref["name"]]
    names = metric_names(prometheus["metadata"]["query"])
    assert names == {"kling_queue_ready_messages", "kling_worker_unacked_jobs"}
    assert names <= exported_metric_names()


def test_every_command_is_a_console_script_of_the_project() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in objects("Deployment"):
        command = container(name)["command"]
        assert command[0] in {*scripts, "celery"}, shlex.join(command)
