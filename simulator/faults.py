"""Fault injection: random faults at configured rates, plus a script of exact answers for tests.

A `FaultPlan` decides, for each incoming call in arrival order, what the simulator does instead of
(or before) handling it normally. Scripted entries are consumed first, one per call; when the
script is empty, one seeded draw per call picks a random fault. Every call draws the same number
of random values, so with a `seed` the sequence of outcomes is fixed for a given call order.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from simulator.answers import KLING_HTTP_STATUS

#: What a call does: its normal handling, or one kind of fault.
ActionKind = Literal["ok", "kling", "comet", "html", "redirect", "empty", "drop", "slow"]
#: Retryable Kling codes injected by `fail_rate` unless `fail_codes` says otherwise.
DEFAULT_FAIL_CODES: tuple[int, ...] = (1302, 1303, 5000, 5001, 5002)


class FaultConfigError(ValueError):
    """Raised when a fault configuration or script entry is malformed."""


@dataclass(frozen=True, slots=True)
class Action:
    """One decision: `kling` answers `code`; `comet` answers `status` with `comet_code`."""

    kind: ActionKind
    code: int | None = None
    status: int | None = None
    comet_code: str | None = None


OK = Action("ok")


def parse_action(entry: str) -> Action:
    """Parse a script entry: "ok", "kling:1302", "comet:503:model_not_found", "html", ..."""
    kind, _, rest = entry.partition(":")
    if kind in ("ok", "html", "redirect", "empty", "drop", "slow") and not rest:
        return Action(kind)  # type: ignore[arg-type]
    try:
        if kind == "kling":
            code = int(rest)
            if code not in KLING_HTTP_STATUS or code == 0:
                raise FaultConfigError(f"unknown Kling code in script entry {entry!r}")
            return Action("kling", code=code)
        if kind == "comet":
            status, _, comet_code = rest.partition(":")
            http_status = int(status)
            if not 400 <= http_status <= 599:
                raise FaultConfigError(f"comet status must be 4xx or 5xx in {entry!r}")
            return Action("comet", status=http_status, comet_code=comet_code or None)
    except ValueError as exc:
        if isinstance(exc, FaultConfigError):
            raise
        raise FaultConfigError(f"bad number in script entry {entry!r}") from exc
    raise FaultConfigError(f"unknown script entry {entry!r}")


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FaultConfigError(f"{name} must be a number between 0 and 1")
    return float(value)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultConfigError(f"{name} must be a non-negative number")
    return float(value)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fault settings, from CLI flags or `POST /_sim/faults` (which replaces them whole)."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fail_rate: float = 0.0
    fail_codes: tuple[int, ...] = DEFAULT_FAIL_CODES
    gateway_429_rate: float = 0.0
    gateway_503_rate: float = 0.0
    html_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 60.0
    max_concurrency: int | None = None
    seed: int | None = None
    script: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        rates = ("fail_rate", "gateway_429_rate", "gateway_503_rate", "html_rate", "drop_rate")
        for name in (*rates, "slow_rate"):
            _rate(name, getattr(self, name))
        for name in ("latency_ms", "latency_jitter_ms", "slow_seconds"):
            _non_negative(name, getattr(self, name))
        if sum(getattr(self, name) for name in (*rates, "slow_rate")) > 1:
            raise FaultConfigError("the fault rates add up to more than 1")
        for code in self.fail_codes:
            if code not in KLING_HTTP_STATUS or code == 0:
                raise FaultConfigError(f"fail_codes: unknown Kling code {code}")
        if self.fail_rate and not self.fail_codes:
            raise FaultConfigError("fail_codes must not be empty when fail_rate is set")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise FaultConfigError("max_concurrency must be at least 1")
        for entry in self.script:
            parse_action(entry)

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        """Build from a JSON object; unknown keys and wrong types raise FaultConfigError."""
        if not isinstance(data, dict):
            raise FaultConfigError("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultConfigError(f"unknown fault settings: {', '.join(unknown)}")
        values = dict(data)
        try:
            for key in ("fail_codes", "script"):
                if key in values:
                    if not isinstance(values[key], list):
                        raise FaultConfigError(f"{key} must be a list")
                    values[key] = tuple(values[key])
            if any(not isinstance(e, str) for e in values.get("script", ())):
                raise FaultConfigError("script entries must be strings")
            for key in ("max_concurrency", "seed"):
                value = values.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise FaultConfigError(f"{key} must be an integer or null")
            if any(
                isinstance(c, bool) or not isinstance(c, int) for c in values.get("fail_codes", ())
            ):
                raise FaultConfigError("fail_codes must be integers")
            return cls(**values)
        except TypeError as exc:
            raise FaultConfigError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON (what `GET /_sim/faults` answers)."""
        data = asdict(self)
        data["fail_codes"] = list(self.fail_codes)
        data["script"] = list(self.script)
        return data


class FaultPlan:
    """The live fault state: the config, its seeded random source and the remaining script."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self._script: deque[Action] = deque(parse_action(entry) for entry in config.script)

    @property
    def script_left(self) -> list[str]:
        """How many scripted answers are still to come (for `GET /_sim/faults`)."""
        return [_format(action) for action in self._script]

    def next_call(self) -> tuple[Action, float]:
        """The action for the next call and its latency in seconds."""
        cfg = self.config
        pick, code_pick, jitter = (
            self._random.random(),
            self._random.random(),
            self._random.random(),
        )
        latency_s = (cfg.latency_ms + jitter * cfg.latency_jitter_ms) / 1000
        if self._script:
            return self._script.popleft(), latency_s
        for rate, action in (
            (cfg.gateway_429_rate, Action("comet", status=429)),
            (cfg.gateway_503_rate, Action("comet", status=503)),
            (cfg.html_rate, Action("html")),
            (cfg.drop_rate, Action("drop")),
            (cfg.slow_rate, Action("slow")),
        ):
            if pick < rate:
                return action, latency_s
            pick -= rate
        if pick < cfg.fail_rate:
            code = cfg.fail_codes[int(code_pick * len(cfg.fail_codes))]
            return Action("kling", code=code), latency_s
        return OK, latency_s


def _format(action: Action) -> str:
    if action.kind == "kling":
        return f"kling:{action.code}"
    if action.kind == "comet":
        suffix = f":{action.comet_code}" if action.comet_code else ""
        return f"comet:{action.status}{suffix}"
    return action.kind
