"""The pre-flight probe over real HTTP: what it decides for each awkward clip, what it reads to
decide, and how it treats hosts that fail."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from contract.clip_rules import COMETAPI_RULES, KLING_RULES
from contract.jobs import S3Object, VideoUrl
from contract.results import VideoFacts
from tests.simulator.clip_host import ClipHost
from tests.worker.preflight.corpus import CORPUS, KLING_ONLY_BREAKER, CorpusClip
from worker.errors import InvalidJob, SourceNotFound, UpstreamDown, VideoRejected
from worker.preflight import Preflight, PreflightPass, ReadLimits
from worker.upstream.answers import OpenedSession

REJECTED = [name for name, clip in CORPUS.items() if clip.expect == "rejected"]
PASSED = [name for name, clip in CORPUS.items() if clip.expect == "passed"]
DEFERRED = [name for name, clip in CORPUS.items() if clip.expect == "deferred"]


@pytest.fixture(scope="module")
def preflight() -> Preflight:
    """As a local stack has it: callers' URLs on loopback are read."""
    return Preflight(rules=COMETAPI_RULES, pool_size=8, private_hosts=True)


def outcome(preflight: Preflight, url: str) -> str | VideoFacts | None:
    """The facts of a pass, None for a clip left to the API, or the rule of a rejection."""
    try:
        return preflight.check(url, where="the clip")
    except VideoRejected as exc:
        return exc.message


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def expected(clip: CorpusClip) -> tuple[int, int, int, float]:
    assert clip.facts is not None
    return clip.facts


@pytest.mark.parametrize("name", REJECTED)
def test_a_clip_that_breaks_a_rule_is_stopped_with_the_rule_and_the_value(
    preflight: Preflight, corpus_host: ClipHost, name: str
) -> None:
    clip = CORPUS[name]

    with pytest.raises(VideoRejected) as caught:
        preflight.check(corpus_host.file_url(name), where=f"clips/{name}")

    message = caught.value.message
    assert message.startswith("pre-flight, no call made: ")
    assert f"{clip.breaks} rule" in message
    assert caught.value.to_result_error().type == "video_rejected"
    assert corpus_host.requests_for(name) <= ReadLimits().max_requests


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("too_short.mp4", "1.5 s is outside 2-5.5 s and 7-10.5 s"),
        ("in_the_gap.mp4", "6 s is outside"),
        ("small.mp4", "640x360"),
        ("fps_25.mp4", "25 fps"),
        ("fps_ntsc.mp4", "29.97 fps"),
        ("clip.avi", "avi is not MP4 or MOV"),
        ("clip.webm", "webm is not MP4 or MOV"),
        ("text.mp4", "not a video"),
        ("empty.mp4", "an empty file"),
        ("sample_cut_30.mp4", "the MP4 has no moov box: the file is truncated or not a complete"),
    ],
)
def test_the_message_names_the_measured_value(
    preflight: Preflight, corpus_host: ClipHost, name: str, value: str
) -> None:
    message = outcome(preflight, corpus_host.file_url(name))

    assert isinstance(message, str)
    assert value in message


@pytest.mark.parametrize("name", PASSED)
def test_a_valid_clip_passes_with_the_facts_the_probe_read(
    preflight: Preflight, corpus_host: ClipHost, name: str
) -> None:
    duration_ms, width, height, fps = expected(CORPUS[name])

    facts = outcome(preflight, corpus_host.file_url(name))

    assert isinstance(facts, VideoFacts), facts
    assert (facts.duration_ms, facts.width, facts.height, facts.fps) == (
        duration_ms,
        width,
        height,
        fps,
    )
    assert facts.total_frames == round(duration_ms * fps / 1000)


@pytest.mark.parametrize("name", DEFERRED)
def test_a_clip_the_probe_cannot_read_is_left_to_the_api(
    preflight: Preflight, corpus_host: ClipHost, name: str
) -> None:
    assert outcome(preflight, corpus_host.file_url(name)) is None


def test_the_large_clip_is_read_far_less_than_whole(
    preflight: Preflight, corpus_host: ClipHost, corpus: dict[str, bytes]
) -> None:
    size = len(corpus["large.mp4"])
    before = corpus_host.bytes_served("large.mp4"), corpus_host.requests_for("large.mp4")

    facts = outcome(preflight, corpus_host.file_url("large.mp4"))

    served = corpus_host.bytes_served("large.mp4") - before[0]
    requests_made = corpus_host.requests_for("large.mp4") - before[1]
    assert isinstance(facts, VideoFacts)
    assert size > 30_000_000
    # The header, the moov at the end and the first frame: some 300 KB of 34 MB.
    assert 0 < served < size // 50
    assert requests_made <= 4


def test_a_moov_at_the_end_costs_two_small_reads(
    preflight: Preflight, corpus_host: ClipHost
) -> None:
    before = (
        corpus_host.bytes_served("moov_at_end.mp4"),
        corpus_host.requests_for("moov_at_end.mp4"),
    )

    assert isinstance(outcome(preflight, corpus_host.file_url("moov_at_end.mp4")), VideoFacts)

    assert corpus_host.requests_for("moov_at_end.mp4") - before[1] == 2
    assert corpus_host.bytes_served("moov_at_end.mp4") - before[0] < 128 * 1024


def test_kling_rules_refuse_what_cometapi_accepts(corpus_host: ClipHost) -> None:
    url = corpus_host.file_url(KLING_ONLY_BREAKER.filename)

    comet = outcome(Preflight(rules=COMETAPI_RULES, pool_size=1), url)
    kling = outcome(Preflight(rules=KLING_RULES, pool_size=1), url)

    assert isinstance(comet, VideoFacts)
    assert comet.duration_ms == 5300
    assert kling == "pre-flight, no call made: duration rule: 5.3 s is outside 2-5 s and 7-10 s"


@pytest.mark.parametrize("status", [403, 404, 410])
def test_a_host_that_says_the_clip_is_gone_means_source_not_found(
    preflight: Preflight, corpus_host: ClipHost, status: int
) -> None:
    url = corpus_host.file_url("faststart.mp4", route=f"status/{status}")

    with pytest.raises(SourceNotFound) as caught:
        preflight.check(url, where="s3://bucket/clip.mp4")

    assert caught.value.http_status == status
    assert caught.value.message == f"s3://bucket/clip.mp4 cannot be read: HTTP {status}"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_failing_host_is_an_outage_to_retry(
    preflight: Preflight, corpus_host: ClipHost, status: int
) -> None:
    url = corpus_host.file_url("faststart.mp4", route=f"status/{status}")

    with pytest.raises(UpstreamDown) as caught:
        preflight.check(url, where="the clip")

    assert caught.value.http_status == status


def test_a_host_that_does_not_answer_in_time_is_an_outage(corpus_host: ClipHost) -> None:
    impatient = Preflight(rules=COMETAPI_RULES, pool_size=1, limits=ReadLimits(timeout_s=0.3))

    with pytest.raises(UpstreamDown, match=r"no answer within 0\.3 s"):
        impatient.check(corpus_host.file_url("faststart.mp4", route="slow"), where="the clip")


def test_a_refused_connection_is_an_outage_named_without_network_detail(
    preflight: Preflight,
) -> None:
    with pytest.raises(UpstreamDown) as caught:
        preflight.check("http://127.0.0.1:9/clip.mp4", where="the clip")

    # No exception class (a port scan could tell TLS from closed ports by it), no address.
    assert (
        caught.value.message
        == "clip host unavailable for the clip: the clip host could not be reached"
    )


@pytest.mark.parametrize("route", ["status/400", "status/401", "redirect"])
def test_an_answer_the_probe_cannot_judge_leaves_the_clip_to_the_api(
    preflight: Preflight, corpus_host: ClipHost, route: str
) -> None:
    assert outcome(preflight, corpus_host.file_url("faststart.mp4", route=route)) is None


def test_a_host_without_range_support_is_read_only_up_to_the_byte_budget(
    corpus_host: ClipHost,
) -> None:
    limits = ReadLimits(max_bytes=1024 * 1024)
    preflight = Preflight(rules=COMETAPI_RULES, pool_size=1, limits=limits)
    before = sample("kling_preflight_bytes_read_total")

    small = outcome(preflight, corpus_host.file_url("moov_at_end.mp4", route="norange"))
    read_small = sample("kling_preflight_bytes_read_total") - before
    large = outcome(preflight, corpus_host.file_url("large.mp4", route="norange"))
    read_large = sample("kling_preflight_bytes_read_total") - before - read_small

    assert isinstance(small, VideoFacts)  # the whole clip fits in the budget
    assert small.duration_ms == 5000
    assert large is None  # its moov is beyond the budget: the API decides
    assert read_large <= limits.max_bytes


@pytest.mark.parametrize(("name", "expect"), [("too_short.mp4", "rejected"), ("large.mp4", None)])
def test_a_host_that_ignores_range_and_gives_no_size_is_judged_only_on_what_it_sent(
    corpus_host: ClipHost, name: str, expect: str | None
) -> None:
    preflight = Preflight(rules=COMETAPI_RULES, pool_size=1, limits=ReadLimits(max_bytes=1 << 20))

    result = outcome(preflight, corpus_host.file_url(name, route="chunked"))

    # A small clip arrives whole within the budget; of a large one only a prefix, and no size
    # to seek its moov from: the API decides, the clip is not called "not a video".
    if expect is None:
        assert result is None
    else:
        assert isinstance(result, str)
        assert "duration rule" in result


def test_a_signed_url_never_shows_its_signature(
    preflight: Preflight, corpus_host: ClipHost
) -> None:
    url = corpus_host.file_url("nope.mp4") + "?X-Amz-Credential=AKIAX&X-Amz-Signature=5ecret99"
    source = VideoUrl(video_url=url)

    with pytest.raises(SourceNotFound) as caught:
        preflight.run_once(source, {"video_url": url}, PreflightPass())

    assert "5ecret99" not in caught.value.message
    assert "AKIAX" not in caught.value.message
    assert "X-Amz-Signature=REDACTED" in caught.value.message


def test_environment_proxies_are_ignored(
    preflight: Preflight, corpus_host: ClipHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    assert isinstance(outcome(preflight, corpus_host.file_url("faststart.mp4")), VideoFacts)


def test_a_callers_url_on_a_private_address_fails_and_is_not_read(corpus_host: ClipHost) -> None:
    guarded = Preflight(rules=COMETAPI_RULES, pool_size=1, private_hosts=False)
    url = corpus_host.file_url("too_short.mp4") + "?guarded=1"
    callers, ours = PreflightPass(), PreflightPass()

    with pytest.raises(InvalidJob, match="the host is not a public address"):
        guarded.run_once(VideoUrl(video_url=url), {"video_url": url}, callers)
    served_to_callers = corpus_host.requests_for("too_short.mp4?guarded=1")
    # A presigned URL of our own S3 is read wherever the endpoint is.
    with pytest.raises(VideoRejected):
        guarded.run_once(S3Object(bucket="bkt", key="too_short.mp4"), {"video_url": url}, ours)

    assert not callers.done
    assert served_to_callers == 0


def test_a_job_is_probed_once_across_its_attempts(
    preflight: Preflight, corpus_host: ClipHost
) -> None:
    url = corpus_host.file_url("rotated.mp4") + "?once=1"
    run = PreflightPass()

    for _ in range(3):
        preflight.run_once(VideoUrl(video_url=url), {"video_url": url}, run)

    assert run.video is not None
    assert run.video.width == 1280
    assert corpus_host.requests_for("rotated.mp4?once=1") == 2


def test_one_preflight_serves_many_threads_at_once(
    preflight: Preflight, corpus_host: ClipHost
) -> None:
    names = [*REJECTED, *PASSED] * 3

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda n: outcome(preflight, corpus_host.file_url(n)), names))

    for name, result in zip(names, outcomes, strict=True):
        if CORPUS[name].expect == "rejected":
            assert isinstance(result, str)
            assert f"{CORPUS[name].breaks} rule" in result
        else:
            assert isinstance(result, VideoFacts)
            assert result.duration_ms == expected(CORPUS[name])[0]


def test_metrics_count_clips_stopped_by_rule_and_bytes_read(
    preflight: Preflight, corpus_host: ClipHost, corpus: dict[str, bytes]
) -> None:
    rejected = sample("kling_preflight_rejected_total", rule="fps")
    clips = sample("kling_preflight_clips_total", outcome="rejected")
    passed = sample("kling_preflight_clips_total", outcome="passed")
    read = sample("kling_preflight_bytes_read_total")
    served = corpus_host.bytes_served("fps_25.mp4") + corpus_host.bytes_served("faststart.mp4")

    outcome(preflight, corpus_host.file_url("fps_25.mp4"))
    outcome(preflight, corpus_host.file_url("faststart.mp4"))

    assert sample("kling_preflight_rejected_total", rule="fps") == rejected + 1
    assert sample("kling_preflight_clips_total", outcome="rejected") == clips + 1
    assert sample("kling_preflight_clips_total", outcome="passed") == passed + 1
    now_served = corpus_host.bytes_served("fps_25.mp4") + corpus_host.bytes_served("faststart.mp4")
    assert sample("kling_preflight_bytes_read_total") - read == now_served - served


def test_a_pass_fills_in_only_the_facts_the_api_did_not_give() -> None:
    run = PreflightPass(done=True, video=VideoFacts(fps=30.0, duration_ms=5000, width=1280))
    silent = OpenedSession("s1", None, VideoFacts(normalized_video_url="https://n/1.mp4"))
    talkative = OpenedSession("s2", None, VideoFacts(fps=29.0, duration_ms=4990))

    assert run.fill(silent).video == VideoFacts(
        fps=30.0, duration_ms=5000, width=1280, normalized_video_url="https://n/1.mp4"
    )
    assert run.fill(talkative).video == VideoFacts(fps=29.0, duration_ms=4990, width=1280)
    assert PreflightPass().fill(silent) is silent


NO_MOOV = "container rule: the MP4 has no moov box: the file is truncated or not a complete MP4"


@pytest.mark.parametrize(
    "name", ["sample_cut_30.mp4", "sample_no_moov.mov", "sample_largesize_cut.mp4"]
)
def test_an_mp4_without_a_moov_is_rejected_on_the_bytes_of_the_first_read(
    preflight: Preflight, corpus_host: ClipHost, name: str
) -> None:
    before = corpus_host.requests_for(name)

    assert outcome(preflight, corpus_host.file_url(name)) == f"pre-flight, no call made: {NO_MOOV}"

    assert corpus_host.requests_for(name) - before == 1


def test_box_headers_beyond_the_first_read_cost_a_small_read_each(
    preflight: Preflight, corpus_host: ClipHost, corpus: dict[str, bytes]
) -> None:
    name = "sample_padded_cut.mp4"  # its mdat header lies 1 MB in, past the first 64 KiB
    before = corpus_host.requests_for(name), corpus_host.bytes_served(name)

    assert outcome(preflight, corpus_host.file_url(name)) == f"pre-flight, no call made: {NO_MOOV}"

    assert corpus_host.requests_for(name) - before[0] <= 3
    assert corpus_host.bytes_served(name) - before[1] < 128 * 1024
    assert len(corpus[name]) > 1_000_000


@pytest.mark.parametrize(
    ("route", "limits"),
    [
        # No size (chunked, Range ignored) and more than the budget: the end is unknown.
        ("chunked", ReadLimits(max_bytes=64 * 1024)),
        # The mdat header is past the only read allowed.
        ("clips", ReadLimits(max_requests=1)),
    ],
)
def test_a_lost_moov_the_reads_cannot_establish_is_left_to_the_api(
    corpus_host: ClipHost, route: str, limits: ReadLimits
) -> None:
    preflight = Preflight(rules=COMETAPI_RULES, pool_size=1, limits=limits)

    assert outcome(preflight, corpus_host.file_url("sample_padded_cut.mp4", route=route)) is None
