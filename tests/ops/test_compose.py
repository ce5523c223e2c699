"""docker-compose.yml, the Dockerfile and config/ checked against the project (no Docker engine
needed): every image pinned, every service health-checked, every command, setting, file and
service they name real, and the operations guide in step with them."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.bin.worker import worker as celery_worker

from contract.settings import Settings
from devstack.processes import ROOT
from producers.cli import main as kling_jobs
from simulator.cli import _parser as simulator_parser
from tests.deploy.exported import exporter_families
from tests.services import IN_CI
from worker.ops import metrics, queue_metrics
from worker.ops.healthcheck import _parser as health_parser
from worker.ops.queue_metrics import _parser as queue_exporter_parser

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "config" / ".env.example"
CONTRACT = ROOT / "docs" / "contract.md"
OPERATIONS = ROOT / "docs" / "operations.md"
#: Services an operator's stack needs (issue 6).
REQUIRED_SERVICES = {
    "rabbitmq", "redis", "minio", "simulator", "worker", "flower", "producer", "queue-exporter",
}  # fmt: skip
#: Variables of the third-party services and libraries the stack configures.
THIRD_PARTY_PREFIXES = ("AWS_", "FLOWER_", "RABBITMQ_", "MINIO_")
#: Where the image keeps config/ (Dockerfile: WORKDIR /home/kling, COPY config ./config).
IMAGE_CONFIG_DIR = "/home/kling/config/"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def env_example(*, commented: bool = False) -> dict[str, str]:
    """The variables config/.env.example sets; with ``commented``, also those it shows commented
    out (``# NAME=example``: documented, unset by default)."""
    pattern = r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$"
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(pattern, line.strip())
        if match and (commented or not match[1]):
            pairs[match[2]] = match[3]
    return pairs


def contract_variables() -> set[str]:
    text = CONTRACT.read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    }


def test_the_stack_has_every_service_an_operator_needs() -> None:
    assert set(services()) >= REQUIRED_SERVICES


@pytest.mark.parametrize("name", sorted(services()))
def test_each_service_uses_a_pinned_image_or_the_project_dockerfile(name: str) -> None:
    service = services()[name]
    if "build" in service:
        assert service["build"] == "."
        assert (ROOT / "Dockerfile").is_file()
    image = service["image"]
    repository, _, tag = image.rpartition(":")
    assert repository
    assert tag
    assert "latest" not in tag


@pytest.mark.parametrize("name", sorted(services()))
def test_each_service_has_a_health_check(name: str) -> None:
    check = services()[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check.get("disable") is not True


@pytest.mark.parametrize("name", sorted(services()))
def test_each_dependency_waits_for_health(name: str) -> None:
    service = services()[name]
    for target, spec in service.get("depends_on", {}).items():
        assert target in services()
        if services()[target].get("restart") == "no":
            # A one-shot set-up step is done when it exits, not while it runs.
            assert spec["condition"] == "service_completed_successfully"
        else:
            assert spec["condition"] == "service_healthy"


def test_project_services_that_use_the_broker_wait_for_it() -> None:
    for name in ("worker", "flower", "producer"):
        assert services()[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_the_worker_can_be_scaled() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker  # a fixed host port would clash between replicas


def project_commands() -> list[tuple[str, list[str]]]:
    """Every command run in the project's image: service commands and health checks."""
    found = []
    for name, service in services().items():
        if service.get("build") != ".":
            continue
        found.append((name, command_of(service)))
        check = service["healthcheck"]["test"]
        if check[0] == "CMD" and check[1] != "python":
            found.append((f"{name} healthcheck", [str(part) for part in check[1:]]))
    return found


@pytest.mark.parametrize(("where", "command"), project_commands())
def test_each_command_is_a_real_entry_point_of_the_project(where: str, command: list[str]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    program, args = command[0], command[1:]
    if program == "celery":
        assert args[:2] == ["-A", "worker"], where
        assert args[2] in ("worker", "flower"), where
        for option in args[3:]:
            if option.startswith("--conf="):
                path = option.removeprefix("--conf=")
                assert path.startswith(IMAGE_CONFIG_DIR)
                assert (ROOT / "config" / path.removeprefix(IMAGE_CONFIG_DIR)).is_file()
        return
    assert program in scripts, f"{where}: {program} is not a console script"
    if program == "kling-api-sim":
        simulator_parser().parse_args(args)
    elif program == "kling-worker-health":
        health_parser().parse_args(args)
    elif program == "kling-queue-exporter":
        queue_exporter_parser().parse_args(args)
    elif program == "kling-worker":  # takes the options of `celery worker`
        options = {opt for param in celery_worker.params for opt in param.opts}
        assert {arg for arg in args if arg.startswith("-")} <= options, where
    elif program == "kling-jobs":
        if args == ["--help"]:
            return
        subcommand = kling_jobs.commands[args[0]]
        options = {opt for param in subcommand.params for opt in param.opts}
        assert {arg for arg in args[1:] if arg.startswith("--")} <= options, where


def test_every_variable_the_stack_sets_is_a_setting_or_a_known_third_party_one() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    named = set(env_example(commented=True))
    for service in services().values():
        environment = service.get("environment", {})
        named |= set(environment if isinstance(environment, dict) else [])
        named |= {
            ref for part in command_of(service) for ref in re.findall(r"\$\$\{?([A-Z_]+)", part)
        }
    unknown = {
        name for name in named if name not in fields and not name.startswith(THIRD_PARTY_PREFIXES)
    }
    assert not unknown
    # Variables a command refers to must be in the env file.
    for service in services().values():
        for part in command_of(service):
            for ref in re.findall(r"\$\$\{?([A-Z_]+)", part):
                assert ref in env_example(), ref


def test_the_env_example_lists_every_contract_variable_and_every_setting() -> None:
    listed = set(env_example(commented=True))
    contract = contract_variables()

    assert len(contract) >= 12
    assert contract <= listed, contract - listed
    assert {name.upper() for name in Settings.model_fields} <= listed


def test_the_env_example_is_consistent_with_itself() -> None:
    env = env_example()
    # The broker URL and Flower's broker API log in as the user RabbitMQ creates.
    credentials = f"{env['RABBITMQ_DEFAULT_USER']}:{env['RABBITMQ_DEFAULT_PASS']}@"
    assert credentials in env["CELERY_BROKER_URL"]
    assert credentials in env["FLOWER_BROKER_API"]
    assert env["AWS_ACCESS_KEY_ID"] == env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == env["MINIO_ROOT_PASSWORD"]
    Settings(_env_file=str(ENV_EXAMPLE))  # every value parses


def test_every_file_the_stack_mounts_or_reads_exists() -> None:
    for service in services().values():
        env_file = service.get("env_file")
        if env_file:
            assert env_file == "config/.env"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert ENV_EXAMPLE.is_file()
    assert (ROOT / "config" / "prometheus" / "prometheus.yml").is_file()


def test_the_dockerfile_runs_as_a_non_root_user_and_copies_real_paths() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source


def test_the_prometheus_config_scrapes_the_workers_on_the_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    (worker_sd,) = jobs["kling-worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker"]
    assert worker_sd["port"] == Settings.model_fields["metrics_port"].default
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]


def test_the_operations_guide_names_only_real_services_and_metrics() -> None:
    guide = OPERATIONS.read_text() + (ROOT / "README.md").read_text()
    named = set(
        re.findall(r"docker compose (?:run --rm|logs(?: -f)?|exec|restart) ([a-z][\w-]*)", guide)
    )
    named |= set(re.findall(r"--scale ([a-z][\w-]*)=", guide))
    assert named
    assert named <= set(services()), named - set(services())
    assert "docker compose up" in guide
    assert "--scale worker=" in guide

    # The log field kling_request_id is the one kling_ name that is not a metric.
    mentioned = set(re.findall(r"\bkling_[a-z_]+", guide)) - {"kling_request_id"}
    collectors = (
        metrics.JOBS,
        metrics.UPSTREAM_LATENCY,
        metrics.UPSTREAM_IN_FLIGHT,
        metrics.RETRIES,
        metrics.LIMITER_WAIT,
        metrics.PUBLISH_FAILURES,
        metrics.PREFLIGHT_CLIPS,
        metrics.PREFLIGHT_REJECTED,
        metrics.PREFLIGHT_BYTES,
        metrics.PREFLIGHT_REQUESTS,
        metrics.PREFLIGHT_DURATION,
        queue_metrics.WORKER_UNACKED,
        metrics.ACCOUNT_CALLS,
        metrics.ACCOUNT_IN_FLIGHT,
        metrics.ACCOUNT_PAUSED,
        metrics.ACCOUNT_BILLED_UNITS,
    )
    families = {family.name for collector in collectors for family in collector.collect()}
    families |= {family.name for family in exporter_families()}
    metric_like = {name for name in mentioned if name.removeprefix("kling_").count("_") >= 1}
    documented = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in metric_like}
    assert families <= documented, families - documented
    assert not documented - families, documented - families


def test_docker_compose_itself_accepts_the_stack(tmp_path: Path) -> None:
    """A real compose implementation (Debian's docker-compose; `config` needs no engine)
    resolves the whole file, with config/.env as an operator makes it from the example."""
    program = shutil.which("docker-compose")
    if program is None:
        message = "docker-compose is not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(f"{message}; CI must run this check", pytrace=False)
        pytest.skip(message)
    # The project directory holds the operator's config/.env; the file itself stays in place.
    (tmp_path / "config").mkdir()
    shutil.copyfile(ENV_EXAMPLE, tmp_path / "config" / ".env")
    env = {name: value for name, value in os.environ.items() if not name.startswith("COMPOSE_")}
    done = subprocess.run(
        [program, "--project-directory", str(tmp_path), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == set(services())
    # Every service got the env file's values.
    worker = resolved["services"]["worker"]["environment"]
    assert worker["CELERY_BROKER_URL"] == env_example()["CELERY_BROKER_URL"]
