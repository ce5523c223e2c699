"""Settings of CONTRACT.md ("Settings") and the broker transport options built from them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from contract import topology as broker
from contract.settings import Settings, sentinel_addresses
from contract.topology import transport_options
from worker.coordination.outcomes import JOB_LEASE_S
from worker.tasks import LEASE_WAIT_JITTER_S

API_KEY = "sk-live-7b1e-super-secret"
SECRET_KEY = "kling-secret-4d2a-super-secret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine: every variable unset, and no ``.env`` around."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


# Defaults -------------------------------------------------------------------------------------


def test_default_api_base_url_is_cometapi() -> None:
    assert settings().kling_api_base_url == "https://api.cometapi.com/kling"


def test_default_timeout_is_30_seconds() -> None:
    assert settings().kling_timeout_seconds == 30


def test_default_max_concurrency_is_64() -> None:
    assert settings().kling_max_concurrency == 64


def test_default_presign_lifetime_is_an_hour() -> None:
    assert settings().presign_expires_seconds == 3600


def test_http_video_urls_are_refused_by_default() -> None:
    assert settings().allow_http_video_urls is False


def test_private_video_hosts_are_refused_by_default() -> None:
    assert settings().allow_private_video_hosts is False


def test_optional_settings_are_unset_by_default() -> None:
    defaults = settings()

    assert defaults.redis_url is None
    assert defaults.kling_api_key is None
    assert defaults.kling_access_key is None
    assert defaults.kling_secret_key is None
    assert defaults.kling_max_rate is None
    assert defaults.s3_endpoint_url is None


def test_without_a_broker_url_the_embedded_broker_is_used() -> None:
    defaults = settings()

    assert defaults.celery_broker_url is None
    assert defaults.uses_embedded_broker is True
    assert defaults.broker_url.startswith("filesystem://")
    assert not defaults.broker_is_amqp
    assert not defaults.broker_is_redis


def test_default_retry_budget_allows_at_least_four_attempts() -> None:
    assert settings().kling_max_attempts >= 4


# Environment and .env -------------------------------------------------------------------------


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_API_BASE_URL", "https://api-singapore.klingai.com")
    monkeypatch.setenv("KLING_TIMEOUT_SECONDS", "12.5")
    monkeypatch.setenv("KLING_MAX_CONCURRENCY", "8")
    monkeypatch.setenv("KLING_MAX_RATE", "20")
    monkeypatch.setenv("PRESIGN_EXPIRES_SECONDS", "600")
    monkeypatch.setenv("ALLOW_HTTP_VIDEO_URLS", "true")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/1")
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://127.0.0.1:5672//")
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    monkeypatch.setenv("KLING_ACCESS_KEY", "ak-1")
    monkeypatch.setenv("KLING_SECRET_KEY", SECRET_KEY)

    read = settings()

    assert read.kling_api_base_url == "https://api-singapore.klingai.com"
    assert read.kling_timeout_seconds == 12.5
    assert read.kling_max_concurrency == 8
    assert read.kling_max_rate == 20
    assert read.presign_expires_seconds == 600
    assert read.allow_http_video_urls is True
    assert read.s3_endpoint_url == "http://127.0.0.1:9000"
    assert read.redis_url == "redis://127.0.0.1:6379/1"
    assert read.celery_broker_url == "amqp://127.0.0.1:5672//"
    assert read.uses_embedded_broker is False
    assert read.kling_api_key is not None
    assert read.kling_api_key.get_secret_value() == API_KEY
    assert read.kling_access_key == "ak-1"
    assert read.kling_secret_key is not None
    assert read.kling_secret_key.get_secret_value() == SECRET_KEY


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False)])
def test_allow_private_video_hosts_is_read_apart_from_allow_http(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("ALLOW_HTTP_VIDEO_URLS", "true")
    monkeypatch.setenv("ALLOW_PRIVATE_VIDEO_HOSTS", value)

    read = settings()

    assert read.allow_private_video_hosts is expected
    assert read.allow_http_video_urls is True


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("false", False), ("0", False)])
def test_allow_http_reads_usual_boolean_spellings(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("ALLOW_HTTP_VIDEO_URLS", value)

    assert settings().allow_http_video_urls is expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KLING_TIMEOUT_SECONDS", "0"),
        ("KLING_MAX_CONCURRENCY", "0"),
        ("KLING_MAX_CONCURRENCY", "many"),
        ("PRESIGN_EXPIRES_SECONDS", "0"),
        ("PRESIGN_EXPIRES_SECONDS", str(8 * 24 * 3600)),
    ],
)
def test_impossible_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        settings()


def test_dot_env_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "KLING_API_BASE_URL=https://api-singapore.klingai.com\n"
        "KLING_MAX_CONCURRENCY=16\n"
        f"KLING_API_KEY={API_KEY}\n",
        encoding="utf-8",
    )

    read = Settings()

    assert read.kling_api_base_url == "https://api-singapore.klingai.com"
    assert read.kling_max_concurrency == 16
    assert read.kling_api_key is not None
    assert read.kling_api_key.get_secret_value() == API_KEY


def test_environment_wins_over_dot_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KLING_MAX_CONCURRENCY=16\n", encoding="utf-8")
    monkeypatch.setenv("KLING_MAX_CONCURRENCY", "32")

    assert Settings().kling_max_concurrency == 32


def test_unknown_variables_in_dot_env_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SOMETHING_ELSE=1\nKLING_MAX_CONCURRENCY=3\n", encoding="utf-8")

    assert Settings().kling_max_concurrency == 3


def test_settings_are_frozen() -> None:
    read = settings()

    with pytest.raises(ValidationError, match="frozen"):
        read.__setattr__("kling_max_concurrency", 1)


# Secrets --------------------------------------------------------------------------------------


def test_secrets_are_not_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    monkeypatch.setenv("KLING_ACCESS_KEY", "ak-1")
    monkeypatch.setenv("KLING_SECRET_KEY", SECRET_KEY)

    read = settings()

    for shown in (repr(read), str(read)):
        assert API_KEY not in shown
        assert SECRET_KEY not in shown


def test_passwords_in_broker_and_redis_urls_are_not_in_repr_or_str(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://worker:amqp-pw-5e1f@rabbit:5672//")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-pw-9c3b@redis:6379/0")

    read = settings()

    for shown in (repr(read), str(read)):
        assert "amqp-pw-5e1f" not in shown
        assert "redis-pw-9c3b" not in shown


# Transport options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@127.0.0.1:5672//", "amqps://rabbit:5671//", "pyamqp://rabbit//"]
)
def test_amqp_broker_confirms_every_publish(url: str) -> None:
    options = transport_options(settings(celery_broker_url=url))

    assert options["confirm_publish"] is True


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://redis:6380/0"])
def test_redis_broker_hands_a_dead_workers_jobs_out_again_well_within_a_minute(url: str) -> None:
    options = transport_options(settings(celery_broker_url=url))

    # A job comes back after the visibility timeout, at the next sweep; the dead worker's lease
    # has lapsed by then (10 s), and the call takes the rest of the 60 s.
    sweep_s = options["unacked_restore_interval"] * options["unacked_restore_throttle"]
    assert options["visibility_timeout"] + sweep_s <= 40


def test_redis_visibility_timeout_outlasts_a_copy_waiting_for_a_lease() -> None:
    options = transport_options(settings(celery_broker_url="redis://127.0.0.1:6379/0"))

    # A copy held for its countdown (unacked) must not be handed out a second time meanwhile.
    assert options["visibility_timeout"] > 2 * (JOB_LEASE_S + max(LEASE_WAIT_JITTER_S))


@pytest.mark.parametrize("concurrency", [1, 200, 1000])
def test_redis_pool_has_a_connection_for_every_worker_thread(concurrency: int) -> None:
    options = transport_options(
        settings(celery_broker_url="redis://127.0.0.1:6379/0", worker_concurrency=concurrency)
    )

    assert options["max_connections"] >= concurrency


def test_embedded_broker_creates_its_folders(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "broker"

    options = transport_options(settings(embedded_broker_dir=folder))

    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        path = Path(options[key])
        assert path.is_dir()
        assert path.is_relative_to(tmp_path)
    assert options["data_folder_in"] == options["data_folder_out"]
    assert options["control_folder"] != options["data_folder_in"]


def test_embedded_broker_folders_are_absolute_even_for_a_relative_setting(
    tmp_path: Path,
) -> None:
    options = transport_options(settings(embedded_broker_dir=Path("relative-broker")))

    path = Path(options["data_folder_in"])
    assert path.is_absolute()
    assert path.is_relative_to(tmp_path)
    assert path.is_dir()


def test_embedded_broker_warns_that_it_is_single_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(broker, "_warned", False)
    caplog.set_level(logging.WARNING, logger=broker.__name__)

    connection = broker.connect(settings(embedded_broker_dir=tmp_path / "broker"))
    connection.release()

    assert any("CELERY_BROKER_URL" in record.getMessage() for record in caplog.records)


def test_a_sentinel_group_is_a_shared_store_and_each_address_must_be_host_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379, 10.0.0.2:26380")
    read = settings()
    assert read.has_shared_store
    assert read.redis_sentinel_master == "mymaster"
    assert sentinel_addresses(str(read.redis_sentinels)) == [("s1", 26379), ("10.0.0.2", 26380)]

    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379,s2")
    with pytest.raises(ValueError, match="'s2' is not host:port"):
        settings()
