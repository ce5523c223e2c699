"""The one settings object every process reads (CONTRACT.md, "Settings").

Values come from the environment and from a ``.env`` file in the working directory.
Secrets are ``SecretStr``: they never show in ``repr``, logs or Flower.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where the embedded broker keeps its files when ``CELERY_BROKER_URL`` is unset.
DEFAULT_EMBEDDED_BROKER_DIR = Path(".kling-broker")


class Settings(BaseSettings):
    """Deployment settings; names match the environment variables of CONTRACT.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # URLs may carry a password: kept out of repr (Celery masks it in its own banner).
    celery_broker_url: str | None = Field(
        default=None,
        repr=False,
        description="amqp://… or redis://…; unset means the embedded single-machine broker.",
    )
    embedded_broker_dir: Path = Field(
        default=DEFAULT_EMBEDDED_BROKER_DIR,
        description="Folder of the embedded filesystem broker (only when no broker URL is set).",
    )
    redis_url: str | None = Field(default=None, repr=False)
    #: ``host:port`` of each Sentinel of a group, comma-separated: the shared store follows the
    #: primary the group names (``REDIS_URL`` then gives only the database and password).
    redis_sentinels: str | None = None
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)

    kling_api_base_url: str = "https://api.cometapi.com/kling"
    kling_api_key: SecretStr | None = None
    kling_access_key: str | None = None
    kling_secret_key: SecretStr | None = None
    kling_timeout_seconds: float = Field(default=30.0, gt=0)
    kling_max_concurrency: int = Field(default=64, ge=1)
    kling_max_rate: float | None = Field(default=None, gt=0)
    #: How long a call's fleet-wide slot outlives its worker's last renewal (renewed while the
    #: call lasts); unset: 10 s. A worker killed mid-call gives its slots back after this long.
    kling_slot_lease_seconds: float | None = Field(default=None, gt=0)
    #: Attempts in all (first call included) before ``upstream_unavailable``.
    kling_max_attempts: int = Field(default=5, ge=1)
    #: First retry waits 1-2 s: Kling asks at least 1 s after 1303 (parallel-task limit).
    kling_backoff_base_seconds: float = Field(default=2.0, ge=0)
    kling_backoff_max_seconds: float = Field(default=30.0, ge=0)

    #: How long calls pause fleet-wide after an auth or account failure.
    kling_circuit_open_seconds: float = Field(default=30.0, ge=0)

    #: A TOML file of several accounts (docs/contract.md, "Accounts"); unset: one account,
    #: ``default``, from the ``KLING_*`` variables above.
    kling_accounts_file: Path | None = None

    #: Probe ``url`` and ``s3`` clips with ranged reads before any call.
    preflight_clips: bool = True
    #: Duration rules of the pre-flight; unset: ``kling`` for a Kling base URL, else ``cometapi``.
    clip_rules: Literal["cometapi", "kling"] | None = None

    s3_endpoint_url: str | None = None
    presign_expires_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    allow_http_video_urls: bool = False
    #: Let ``url`` jobs name hosts on loopback, private, link-local or other non-global
    #: addresses (local stacks only); otherwise such a job fails ``invalid_job``.
    allow_private_video_hosts: bool = False

    worker_concurrency: int = Field(default=200, ge=1)
    worker_prefetch_multiplier: int = Field(default=1, ge=1)

    #: Port of the worker's Prometheus exporter (one per worker process); 0 turns it off.
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    #: ``json``: one JSON object a line (for log shippers); ``text``: plain lines for a terminal.
    log_format: Literal["json", "text"] = "json"

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            sentinel_addresses(value)  # raises ValueError naming the bad entry
            return value
        return None

    @property
    def has_shared_store(self) -> bool:
        """Whether the fleet shares a store (``REDIS_URL`` or ``REDIS_SENTINELS``)."""
        return bool(self.redis_url or self.redis_sentinels)

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.celery_broker_url

    @property
    def broker_url(self) -> str:
        """The URL Celery and kombu connect with (``filesystem://`` for the embedded broker)."""
        return self.celery_broker_url or "filesystem://localhost/"

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def broker_is_amqp(self) -> bool:
        return self.broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as addresses; raises ValueError naming an entry that is not one."""
    addresses = []
    for entry in (part.strip() for part in value.split(",")):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS entry {entry!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses
