"""Log lines for operators: one JSON object a line (``LOG_FORMAT=json``) or plain text.

Celery builds the worker's handlers (``-l LEVEL``, ``--logfile``); :func:`install` only gives
them our formatter. Every line, whatever logged it, goes through a :class:`SecretScrubber`
last: the values of the configured secrets and of signed-URL query parameters never reach
a log, even from a third-party message or a traceback.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from contract.redaction import REDACTED, SECRET_QUERY_PARAMS
from contract.settings import Settings
from worker.accounts import read_accounts_file
from worker.errors import ConfigurationError

#: Environment variables whose values are secrets although no setting of ours holds them.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "FLOWER_BASIC_AUTH")
#: Shortest value treated as a secret: masking "1" or "abc" everywhere would garble the logs.
MIN_SECRET_LENGTH = 6
#: Celery's own INFO lines for every task received and succeeded: the job's outcome line says
#: the same, once (and a fleet's log volume is a third). ``-l DEBUG`` keeps them.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")
#: Format of a ``LOG_FORMAT=text`` line.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Extras never copied into a JSON line: Celery's ``data`` holds a task's args and kwargs.
_HIDDEN_EXTRAS = frozenset({"data"})


class SecretScrubber:
    """Replaces known secret values and signed-URL query parameter values in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {value for value in secrets if value and len(value) >= MIN_SECRET_LENGTH}
        # A value may show JSON-escaped inside a JSON line: mask that spelling too.
        values |= {json.dumps(value)[1:-1] for value in values}
        self._values = sorted(values, key=len, reverse=True)
        names = "|".join(re.escape(name) for name in sorted(SECRET_QUERY_PARAMS))
        self._query = re.compile(rf"(?i)([?&](?:{names})=)[^&\s\"'\\]+")
        self._bearer = re.compile(r"(?i)\b(Bearer\s+)[A-Za-z0-9._~+/=-]+")
        # ``scheme://user:password@host``: the userinfo goes, the host stays.
        self._userinfo = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'\\]+@")

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        text = self._query.sub(rf"\g<1>{REDACTED}", text)
        text = self._userinfo.sub(r"\g<1>", text)
        return self._bearer.sub(rf"\g<1>{REDACTED}", text)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value this process knows: keys (of every account in KLING_ACCOUNTS_FILE
    too), broker passwords, AWS credentials."""
    found = [
        secret.get_secret_value()
        for secret in (settings.kling_api_key, settings.kling_secret_key)
        if secret is not None
    ]
    if settings.kling_accounts_file is not None:
        try:
            accounts = read_accounts_file(
                settings.kling_accounts_file, default_base_url=settings.kling_api_base_url
            )
        except ConfigurationError:
            accounts = ()  # the worker stops at start, saying what is wrong with the file
        found += [secret for account in accounts for secret in account.secrets()]
    for url in (settings.celery_broker_url, settings.redis_url):
        password = urlsplit(url).password if url else None
        if password:
            found.append(password)
    found += [os.environ[name] for name in SECRET_ENV_VARS if os.environ.get(name)]
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, then the extras."""

    def __init__(self, scrub: SecretScrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in _HIDDEN_EXTRAS:
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return self._scrub(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, scrubbed like the JSON ones."""

    def __init__(self, scrub: SecretScrubber) -> None:
        super().__init__(TEXT_FORMAT)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))


def make_formatter(settings: Settings) -> logging.Formatter:
    scrub = SecretScrubber(secrets_of(settings))
    return JsonFormatter(scrub) if settings.log_format == "json" else TextFormatter(scrub)


def install(logger: logging.Logger, settings: Settings) -> None:
    """Give the handlers Celery made on ``logger`` our formatter.

    Only handlers of the exact types Celery creates are touched, so a host process's own
    handlers (pytest's capture, an embedding application's) keep their format.
    """
    formatter = make_formatter(settings)
    for handler in logger.handlers:
        if type(handler) in (logging.StreamHandler, logging.handlers.WatchedFileHandler):
            handler.setFormatter(formatter)
    if logger.getEffectiveLevel() > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
