"""Malformed jobs and raw messages for the fuzzer, published straight onto the job queue.

Every message carries an ``x-chaos-seq`` header (dead letters keep headers) and, when it names
a job id or a task id that a result could carry, that id is ``fz-<seq>``: each outcome can be
traced back to the message that caused it.

Besides malformed jobs and broken messages, :data:`garbage` sends the hostile shapes production
brings (bodies nested thousands deep, numbers no float holds, huge strings, lone surrogates) and
valid jobs among them, each of which must succeed.
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
#: The Kling clip of every valid fuzzed job; the scenario registers it with the simulator.
GARBAGE_VIDEO_ID, GARBAGE_TASK_ID = "garbage-video", "garbage-task"
#: Job id written into a hostile body made as text, replaced by ``fz-<seq>`` as text too:
#: decoding and encoding such a body again would change the very bytes under test.
JOB_ID_SLOT = "fz-slot"

_JOB_ID = re.compile(JOB_ID_PATTERN)


@dataclass(frozen=True)
class RawMessage:
    """One message as it goes on the wire: body bytes, content type and encoding, headers."""

    kind: str
    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any]
    #: A valid job: a ``succeeded`` result is due, not an ``invalid_job`` or a dead letter.
    valid: bool = False

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
    slot = json.dumps(JOB_ID_SLOT).encode()
    if slot in body:
        return body.replace(slot, json.dumps(tag).encode())
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
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


# Valid jobs ---------------------------------------------------------------------------------

#: The source of every valid fuzzed job: the clip the scenario registers with the simulator.
GARBAGE_SOURCE = {"kind": "kling", "video_id": GARBAGE_VIDEO_ID, "task_id": GARBAGE_TASK_ID}
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

#: Metadata in legal JSON that is odd: escapes (NUL, a surrogate pair, an RTL mark, every
#: short escape), numbers far from everyday ones but within a float's range, nesting well
#: within any limit, empty and duplicate keys.
_ODD_LEGAL_METADATA = st.sampled_from(
    [
        r'{"a\u0000b": "\ud83d\ude00", "\u202e\ufeff": "\/\b\f\n\r\t\"\\"}',
        '{"big": 1' + "0" * 100 + ', "tiny": 1e-999, "neg_zero": -0, "huge": 1.5e300}',
        '{"deep": ' + '{"a": ' * 20 + "null" + "}" * 20 + "}",
        '{"": "", " ": [[], {}, [[]]], "dup": 1, "dup": 2}',
    ]
)


def valid_job(job_id: str = "ok-id", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job that meets the contract, for the clip the scenario's simulator knows."""
    return {
        "job_id": job_id,
        "source": GARBAGE_SOURCE,
        "metadata": metadata or {},
        "submitted_at": "2026-11-24T10:00:00Z",
    }


def valid_message(job_id: str = "ok-id", metadata: dict[str, Any] | None = None) -> RawMessage:
    """A task message with a valid job: a ``succeeded`` result is due."""
    body = _task_body([], {"job": valid_job(job_id, metadata)}, _EMBED)
    return RawMessage("valid", body, "application/json", "utf-8", task_headers(), valid=True)


def _valid_with_metadata_text(metadata: str) -> RawMessage:
    body = _task_text(_job_text(metadata=metadata)).encode()
    return RawMessage(
        "valid/odd-metadata", body, "application/json", "utf-8", task_headers(), valid=True
    )


#: Task messages with a valid job: fuzzed metadata, or odd but legal metadata.
valid_task_messages = st.one_of(
    st.dictionaries(_text, json_values, max_size=3).map(lambda m: valid_message(metadata=m)),
    _ODD_LEGAL_METADATA.map(_valid_with_metadata_text),
)


# Hostile shapes -----------------------------------------------------------------------------
# Made as text: json.dumps cannot write 1e999, a lone surrogate or a body nested 1,200 deep.

_SOURCE_TEXT = json.dumps(GARBAGE_SOURCE)
#: Nesting depths: past this project's limit (64), pydantic's (about 255), json's recursion
#: (about 1,000), and far past.
_DEPTHS = st.sampled_from([65, 260, 999, 1200, 20_000])
#: Numbers no float holds, and the constants Python's json reads although JSON has none.
_BAD_NUMBERS = st.sampled_from(
    ["1e999", "-1e999", "1" + "0" * 5000, "-1" + "0" * 5000, "NaN", "Infinity", "-Infinity"]
)
#: String literals that decode to what no UTF-8 text can hold: lone, reversed and cut-short
#: surrogates. (Odd but legal text, a NUL or bidi marks, is in the valid jobs' metadata.)
_UNENCODABLE_STRINGS = st.sampled_from(
    [r'"\ud800"', r'"\udfff\ud800"', r'"a\ud83dz"', r'"\udc00 tail"']
)
#: Characters of a huge string, as JSON text: plain, escaped, a lone surrogate, two-byte UTF-8.
_HUGE_FILLERS = st.sampled_from(["x", r"\u00e9", r"\ud800", "é"])
#: Lengths of huge strings: one within the 1 MiB a task body may take, one past it.
_HUGE_SIZES = st.sampled_from([100_000, 1_100_000])
#: Raw bytes no UTF-8 decoder takes: a surrogate and an overlong encoding, stray bytes.
_NOT_UTF8 = st.sampled_from([b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xff"])
#: Where a hostile value goes in a task body: everywhere the job then breaks the contract.
#: (Not the embed, where a value Python decodes leaves a runnable job: see "deep-embed".)
_PLACES = ["job", "args", "job_id", "metadata", "source", "video_id", "task_id",
           "submitted_at", "account", "extra-field", "extra-kwarg"]  # fmt: skip


def deep_json(depth: int, *, objects: bool = False) -> str:
    """An array (or object) nested ``depth`` deep: ``[[[…]]]`` or ``{"a":{"a":…0}}``."""
    if objects:
        return '{"a":' * depth + "0" + "}" * depth
    return "[" * depth + "]" * depth


def _job_text(
    *,
    job_id: str = json.dumps(JOB_ID_SLOT),
    source: str = _SOURCE_TEXT,
    metadata: str = "{}",
    submitted_at: str = '"2026-11-24T10:00:00Z"',
    extra: str = "",
) -> str:
    """A job object as JSON text, each field's value given as JSON text."""
    fields = [
        f'"job_id":{job_id}',
        f'"source":{source}',
        f'"metadata":{metadata}',
        f'"submitted_at":{submitted_at}',
        *([extra] if extra else []),
    ]
    return "{" + ",".join(fields) + "}"


def _task_text(job: str, *, args: str = "[]", embed: str = "null", kwargs_extra: str = "") -> str:
    """A task body ``[args, {"job": job, …}, embed]`` as JSON text."""
    kwargs = '{"job":' + job + (f",{kwargs_extra}" if kwargs_extra else "") + "}"
    return f"[{args},{kwargs},{embed}]"


def poison_body(depth: int = 1200) -> bytes:
    """``[[],{"job":[[[…]]]},null]``: 2.4 KB at 1,200 deep, deeper than ``json`` recurses."""
    return _task_text(deep_json(depth)).encode()


def deep_metadata_body(depth: int = 260, job_id: str = JOB_ID_SLOT) -> bytes:
    """A job with a valid job id whose ``metadata`` nests ``depth`` levels (1.8 KB at 260):
    JSON that decodes, and a job that breaks the contract (an ``invalid_job`` result)."""
    job = _job_text(job_id=json.dumps(job_id), metadata=deep_json(depth, objects=True))
    return _task_text(job).encode()


def surrogate_body(place: str) -> bytes:
    """A job with a valid job id and a lone surrogate (``"\\ud800"``) at ``place`` (one of
    ``video_id``, ``metadata`` …), a field an ``invalid_job`` result echoes."""
    return _body_with(place, r'"\ud800"').encode()


def _body_with(place: str, value: str) -> str:
    """A task body (text) with ``value`` (JSON text) at ``place``, the rest a valid job."""
    if place == "job":
        return _task_text(value)
    if place == "args":
        return _task_text(_job_text(), args=f"[{value}]")
    if place == "job_id":
        return _task_text(_job_text(job_id=value))
    if place == "source":
        return _task_text(_job_text(source=value))
    if place == "submitted_at":
        return _task_text(_job_text(submitted_at=value))
    if place == "metadata":
        return _task_text(_job_text(metadata='{"m":' + value + "}"))
    if place == "metadata-key":
        return _task_text(_job_text(metadata="{" + value + ":1}"))
    if place in ("video_id", "task_id"):
        source = json.dumps({**GARBAGE_SOURCE, place: "@"}).replace('"@"', value)
        return _task_text(_job_text(source=source))
    if place == "account":
        return _task_text(_job_text(extra=f'"account":{value}'))
    if place == "extra-field":
        return _task_text(_job_text(extra=f'"x":{value}'))
    return _task_text(_job_text(), kwargs_extra=f'"x":{value}')


def _hostile(kind: str, body: bytes) -> RawMessage:
    return RawMessage(f"hostile/{kind}", body, "application/json", "utf-8", task_headers())


@st.composite
def hostile_messages(draw: st.DrawFn) -> RawMessage:
    """A JSON task message (task name and id in place) of a shape production brings: nested
    deeper than decoders recurse, numbers out of range, huge strings, lone surrogates, bytes
    that are not UTF-8, a duplicate key. A dead letter or an ``invalid_job``
    result is due, and the worker must live on."""
    kind = draw(
        st.sampled_from(
            ["deep", "deep-embed", "deep-metadata", "number", "string", "huge-string",
             "not-utf8", "duplicate-key"]
        )
    )  # fmt: skip
    places = st.sampled_from(_PLACES)
    if kind == "deep":
        body = _body_with(draw(places), deep_json(draw(_DEPTHS), objects=draw(st.booleans())))
    elif kind == "deep-embed":
        # Past json's recursion: unreadable, whatever the rest of the body holds.
        deep = deep_json(draw(st.sampled_from([1200, 20_000])))
        body = _task_text(_job_text(), embed='{"chain":' + deep + "}")
    elif kind == "deep-metadata":
        return _hostile(kind, deep_metadata_body(draw(_DEPTHS)))
    elif kind == "number":
        body = _body_with(draw(places), draw(_BAD_NUMBERS))
    elif kind == "string":
        place = draw(st.sampled_from([*_PLACES, "metadata-key"]))
        body = _body_with(place, draw(_UNENCODABLE_STRINGS))
    elif kind == "huge-string":
        filler = draw(_HUGE_FILLERS)
        huge = '"' + filler * (draw(_HUGE_SIZES) // len(filler)) + '"'
        body = _body_with(draw(places), huge)
    elif kind == "not-utf8":
        text = _body_with(draw(places), '"@"').encode()
        return _hostile(kind, text.replace(b'"@"', b'"' + draw(_NOT_UTF8) + b'"'))
    else:
        # Decoders keep the last of two keys: a valid job id, then a broken one.
        broken = draw(_BAD_NUMBERS | _UNENCODABLE_STRINGS)
        body = _task_text(_job_text(extra=f'"job_id":{broken}'))
    return _hostile(kind, body.encode())


garbage = st.one_of(
    task_messages_with_bad_jobs(), broken_messages(), hostile_messages(), valid_task_messages
)
"""Every kind of message the fuzzer sends: each ends in one result (``succeeded`` for a valid
job, ``invalid_job`` for a broken one) or one dead letter."""
