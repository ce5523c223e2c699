"""Malformed jobs and raw messages for the fuzzer, published straight onto the job queue.

Every message carries an ``x-chaos-seq`` header (dead letters keep headers) and, when it names
a job id or a task id that a result could carry, that id is ``fz-<seq>``: each outcome can be
traced back to the message that caused it.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import strategies as st
from kombu.connection import Connection

from contract.jobs import JOB_ID_PATTERN
from contract.names import JOB_QUEUE, TASK_NAME

#: Header that numbers each fuzzed message.
SEQ_HEADER = "x-chaos-seq"
#: Size of the oversized metadata blobs (the contract allows 16 KiB).
HUGE_METADATA_CHARS = 40 * 1024

_JOB_ID = re.compile(JOB_ID_PATTERN)


@dataclass(frozen=True)
class RawMessage:
    """One message as it goes on the wire: body bytes, content type and encoding, headers."""

    kind: str
    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any]

    def numbered(self, seq: int) -> RawMessage:
        """This message as number ``seq``: task id and any well-formed job id become
        ``fz-<seq>`` so its result names it."""
        tag = f"fz-{seq}"
        headers = {**self.headers, SEQ_HEADER: seq}
        for name in ("id", "root_id"):
            if isinstance(headers.get(name), str):
                headers[name] = tag
        return replace(self, body=_retag_job_id(self.body, tag), headers=headers)

    def describe(self) -> str:
        return (
            f"{self.kind}: content_type={self.content_type!r} "
            f"encoding={self.content_encoding!r} headers={self.headers!r} body={self.body[:300]!r}"
        )


def _retag_job_id(body: bytes, tag: str) -> bytes:
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[1], dict)):
        return body
    job = decoded[1].get("job")
    if isinstance(job, dict) and isinstance(job.get("job_id"), str):
        if _JOB_ID.match(job["job_id"]):
            job["job_id"] = tag
        return json.dumps(decoded).encode()
    return body


def publish_raw(connection: Connection, message: RawMessage) -> None:
    """Publish exactly these bytes and properties (kombu's serializer is bypassed)."""
    channel = connection.default_channel
    properties: dict[str, Any] = {"delivery_mode": 2}
    raw = channel.prepare_message(
        message.body,
        0,
        message.content_type,
        message.content_encoding,
        message.headers,
        properties,
    )
    channel.basic_publish(raw, exchange=JOB_QUEUE, routing_key=JOB_QUEUE)


# Strategies ---------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text
json_values = st.recursive(
    _json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=20,
)
_header_values = _json_scalars | st.lists(_json_scalars, max_size=3)


def task_headers(task: Any = TASK_NAME) -> dict[str, Any]:
    return {
        "lang": "py",
        "task": task,
        "id": "fz",
        "root_id": "fz",
        "parent_id": None,
        "group": None,
        "retries": 0,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "chaos-fuzzer",
    }


_valid_source = st.sampled_from(
    [
        {"kind": "kling", "video_id": "v", "task_id": "t"},
        {"kind": "s3", "bucket": "uploads", "key": "clips/valid_mp4.mp4", "version_id": None},
        {"kind": "url", "video_url": "https://cdn.example.com/a.mp4"},
    ]
)

#: Sources that break the contract one way or another.
bad_sources = st.one_of(
    json_values.filter(lambda value: not isinstance(value, dict)),
    st.dictionaries(_text, json_values, max_size=4),
    st.just({"kind": "kling", "video_id": "v"}),
    st.just({"kind": "kling", "video_id": "v", "task_id": "t", "video_url": "https://x/a"}),
    st.just({"kind": "s3", "bucket": "u", "key": ""}),
    st.just({"kind": "url", "video_url": "ftp://example.com/a.mp4"}),
    st.just({"kind": "url", "video_url": "https://"}),
    st.builds(
        lambda source, key, value: {**source, key: value},
        _valid_source,
        st.sampled_from(["kind", "video_id", "task_id", "bucket", "key", "video_url"]),
        st.none() | st.integers() | st.lists(st.integers(), max_size=2) | st.just(""),
    ),
)


@st.composite
def malformed_jobs(draw: st.DrawFn) -> Any:
    """A ``job`` argument that breaks the contract (so no API call is due for it)."""
    job: dict[str, Any] = {
        "job_id": draw(st.just("ok-id") | json_values),
        "source": draw(_valid_source),
        "metadata": draw(st.dictionaries(_text, json_values, max_size=3)),
        "submitted_at": draw(st.just("2026-11-24T10:00:00Z") | json_values),
    }
    flaw = draw(
        st.sampled_from(
            ["source", "huge-metadata", "metadata-type", "extra-field", "bad-job-id", "no-source"]
        )
    )
    if flaw == "source":
        job["source"] = draw(bad_sources)
    elif flaw == "huge-metadata":
        job["metadata"] = {"blob": "x" * HUGE_METADATA_CHARS}
    elif flaw == "metadata-type":
        job["metadata"] = draw(json_values.filter(lambda value: not isinstance(value, dict)))
    elif flaw == "extra-field":
        job[draw(_text.filter(lambda k: k not in job))] = draw(json_values)
    elif flaw == "bad-job-id":
        job["job_id"] = draw(
            st.sampled_from(["", "has space", "x" * 129, "slash/id", "ünïcode"]) | st.integers()
        )
    else:
        del job["source"]
    return job


def _task_body(args: Any, kwargs: Any, embed: Any) -> bytes:
    return json.dumps([args, kwargs, embed]).encode()


_embed = st.just({"callbacks": None, "errbacks": None, "chain": None, "chord": None})


@st.composite
def task_messages_with_bad_jobs(draw: st.DrawFn) -> RawMessage:
    """A well-formed task message whose job is malformed: an ``invalid_job`` result is due."""
    shape = draw(st.sampled_from(["job", "job-not-object", "extra-kwarg", "positional"]))
    args: list[Any]
    kwargs: dict[str, Any]
    if shape == "job":
        args, kwargs = [], {"job": draw(malformed_jobs())}
    elif shape == "job-not-object":
        args, kwargs = [], {"job": draw(json_values.filter(lambda v: not isinstance(v, dict)))}
    elif shape == "extra-kwarg":
        args, kwargs = [], {"job": draw(malformed_jobs()), draw(_text): draw(json_values)}
    else:
        args, kwargs = draw(st.lists(json_values, min_size=1, max_size=3)), {}
    body = _task_body(args, kwargs, draw(_embed))
    return RawMessage(f"task/{shape}", body, "application/json", "utf-8", task_headers())


@st.composite
def broken_messages(draw: st.DrawFn) -> RawMessage:
    """A message that is not a runnable task at all: a dead letter is due (or, if its job id
    can be recovered, an ``invalid_job`` result)."""
    kind = draw(
        st.sampled_from(
            [
                "random-bytes",
                "random-json",
                "invalid-utf8",
                "pickle",
                "yaml",
                "no-headers",
                "unknown-task",
                "task-not-a-string",
                "missing-id",
                "wrong-header-types",
                "body-shape",
                "compressed-garbage",
            ]
        )
    )
    headers = task_headers()
    body = _task_body([], {"job": {"job_id": "fz", "source": {"kind": "kling"}}}, {})
    content_type: str | None = "application/json"
    encoding: str | None = "utf-8"
    if kind == "random-bytes":
        body = draw(st.binary(max_size=200))
        content_type = draw(
            st.sampled_from(
                ["application/json", "application/octet-stream", "text/plain", "", None]
            )
        )
        encoding = draw(st.sampled_from(["utf-8", "binary", None]))
    elif kind == "random-json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "invalid-utf8":
        body = b'[[], {"job": {"job_id": "fz", "metadata": "\xff\xfe\xc3("}}, {}]'
    elif kind == "pickle":
        body = pickle.dumps(((), {"job": draw(malformed_jobs())}, {}))
        content_type, encoding = "application/x-python-serialize", "binary"
    elif kind == "yaml":
        body = b"- []\n- {job: {job_id: fz}}\n- {}\n"
        content_type = "application/x-yaml"
    elif kind == "no-headers":
        headers = {}
    elif kind == "unknown-task":
        headers = task_headers(draw(st.sampled_from(["os.system", "celery.ping", "kling.x"])))
    elif kind == "task-not-a-string":
        headers = task_headers(draw(_json_scalars | st.lists(_text, max_size=2)))
    elif kind == "missing-id":
        headers.pop(draw(st.sampled_from(["id", "task", "root_id", "retries"])))
    elif kind == "wrong-header-types":
        name = draw(st.sampled_from(["id", "retries", "eta", "expires", "timelimit", "argsrepr"]))
        headers[name] = draw(_header_values)
    elif kind == "body-shape":
        body = json.dumps(
            draw(
                st.sampled_from(
                    [[], [[]], [[], {}], "a string", 42, {"job": {}}, [None, None, None]]
                )
                | st.tuples(json_values, json_values, json_values).map(list)
            )
        ).encode()
    else:
        headers["compression"] = draw(st.sampled_from(["application/x-gzip", "zlib", "bogus"]))
    return RawMessage(kind, body, content_type, encoding, headers)


garbage = st.one_of(task_messages_with_bad_jobs(), broken_messages())
