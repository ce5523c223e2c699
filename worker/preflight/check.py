"""The pre-flight: a ``url`` or ``s3`` clip that breaks the clip rules fails before any call.

The clip's ``video_url`` (the job's URL, or the presigned URL of the S3 object: one code path
for both) is read with a few HTTP Range GETs and probed; then:

- a rule every reading breaks: :class:`~worker.errors.VideoRejected`, the message naming the
  rule and the measured value, and no call;
- a host answering 403/404/410: :class:`~worker.errors.SourceNotFound`;
- a timeout (the probe's deadline, or its share of the process's byte budget not free in
  time), a dropped connection, 429 or 5xx: :class:`~worker.errors.UpstreamDown`, retried by the
  pipeline like any outage;
- a ``url`` job's host on a non-public address (unless ``ALLOW_PRIVATE_VIDEO_HOSTS``):
  :class:`~worker.errors.InvalidJob`, and nothing sent to that address;
- anything the probe cannot decide (over its byte or request budget, an MP4 FFmpeg cannot open
  that does have a ``moov``, a redirect, an odd status): the clip goes to the API.

Signed URLs never appear in a message or a log line: S3 clips are named ``s3://bucket/key``,
other URLs are shown with their signatures redacted. Nor does network detail (no exception
names, no resolved addresses): a message says the host timed out or could not be reached.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from contract.clip_rules import BrokenRule, ClipRules, rules_for
from contract.jobs import KlingVideo, S3Object, VideoUrl
from contract.redaction import redact_url
from contract.results import VideoFacts
from contract.settings import Settings
from worker.errors import SourceNotFound, UpstreamDown, VideoRejected
from worker.ops import metrics
from worker.preflight.addresses import non_public_host_error
from worker.preflight.budget import PREFLIGHT_BUFFER_BYTES, ByteBudget
from worker.preflight.connections import preflight_session
from worker.preflight.deadline import Watchdog
from worker.preflight.probe import Undecided, measure
from worker.preflight.reader import ClipReader, ReadLimits
from worker.upstream.answers import OpenedSession

logger = logging.getLogger(__name__)


@dataclass
class PreflightPass:
    """One job's pre-flight, across its attempts: done once, its facts kept for the result."""

    done: bool = False
    #: What the probe measured; None when it was deferred to the API or not run.
    video: VideoFacts | None = None

    def fill(self, opened: OpenedSession) -> OpenedSession:
        """``opened`` with each clip fact the API did not report taken from the probe."""
        if self.video is None:
            return opened
        probed = self.video.model_dump(exclude_none=True)
        missing = {k: v for k, v in probed.items() if getattr(opened.video, k) is None}
        return replace(opened, video=opened.video.model_copy(update=missing)) if missing else opened


class Preflight:
    """Probes clips before any call; thread-safe, one per worker process (its HTTP pools, its
    byte budget and its deadline watchdog too)."""

    def __init__(
        self,
        *,
        rules: ClipRules,
        pool_size: int,
        limits: ReadLimits | None = None,
        private_hosts: bool = False,
        buffer_bytes: int = PREFLIGHT_BUFFER_BYTES,
    ) -> None:
        self.rules = rules
        self.limits = limits or ReadLimits()
        #: Whether ``url`` clips on non-public addresses are read (local stacks only).
        self._private_hosts = private_hosts
        #: Callers' URLs go through connections that check the address; ours (S3) do not. Two
        #: sessions, so that no connection made for one is ever reused for the other.
        self._public_session = preflight_session(pool_size=pool_size, public_only=True)
        self._session = preflight_session(pool_size=pool_size, public_only=False)
        #: The bytes all this process's probes may buffer at once.
        self.budget = ByteBudget(buffer_bytes, reserve=self.limits.max_bytes)
        self._watchdog = Watchdog()

    @classmethod
    def from_settings(cls, settings: Settings) -> Preflight:
        return cls(
            rules=rules_for(settings.clip_rules, settings.kling_api_base_url),
            pool_size=settings.worker_concurrency,
            private_hosts=settings.allow_private_video_hosts,
        )

    def run_once(
        self, source: KlingVideo | S3Object | VideoUrl, body: dict[str, object], run: PreflightPass
    ) -> None:
        """Check the clip of ``body`` unless this job's pre-flight is done; raises as
        :meth:`check` does (a retryable failure leaves it to the next attempt)."""
        video_url = body.get("video_url")
        if run.done or not isinstance(video_url, str):
            return
        where = _where(source, video_url)
        # A job's own URL is the caller's; a presigned URL points at our own S3 (which may well
        # be on a private network).
        callers = isinstance(source, VideoUrl) and not self._private_hosts
        run.video = self.check(video_url, where=where, public_only=callers)
        run.done = True

    def check(self, video_url: str, *, where: str, public_only: bool = False) -> VideoFacts | None:
        """The probed facts of a clip that passes, None when the API must decide; raises
        VideoRejected, SourceNotFound, UpstreamDown, or InvalidJob when ``public_only`` and the
        host is not on a public address. ``where`` names the clip in messages."""
        started = time.perf_counter()
        session = self._public_session if public_only else self._session
        deadline = self._watchdog.arm(self.limits.timeout_s)
        reader = ClipReader(
            session, video_url, self.limits, deadline=deadline, share=self.budget.share()
        )
        try:
            outcome = measure(reader) if reader.failure is None else Undecided("unread")
        finally:
            reader.close()

        def count(kind: str, rule: str | None = None) -> None:
            elapsed_s = time.perf_counter() - started
            metrics.count_preflight(kind, reader.bytes_read, reader.requests, elapsed_s, rule=rule)

        failure = reader.failure
        if failure is not None and failure.kind == "forbidden":
            logger.info("Pre-flight refused %s: the host is not a public address.", where)
            raise non_public_host_error(where)
        if failure is not None and failure.kind == "gone":
            count("source_not_found")
            raise SourceNotFound(
                f"{where} cannot be read: {failure.reason}", http_status=failure.http_status
            )
        if failure is not None and failure.kind == "down":
            count("host_down")
            raise UpstreamDown(
                f"clip host unavailable for {where}: {failure.reason}",
                http_status=failure.http_status,
            )
        if failure is not None or isinstance(outcome, Undecided):
            count("deferred")
            reason = failure.reason if failure is not None else getattr(outcome, "reason", "")
            logger.info("Pre-flight could not decide on %s (%s); the API will.", where, reason)
            return None
        broken = outcome if isinstance(outcome, BrokenRule) else outcome.broken_rule(self.rules)
        if broken is not None:
            count("rejected", broken.rule)
            logger.info("Pre-flight stopped %s before any call: %s.", where, broken.message)
            raise VideoRejected(f"pre-flight, no call made: {broken.message}")
        count("passed")
        return outcome.video_facts() if not isinstance(outcome, BrokenRule) else None

    def close(self) -> None:
        self._public_session.close()
        self._session.close()


def _where(source: KlingVideo | S3Object | VideoUrl, video_url: str) -> str:
    """How messages name the clip: never with a signature."""
    if isinstance(source, S3Object):
        return f"s3://{source.bucket}/{source.key}"
    return redact_url(video_url)
