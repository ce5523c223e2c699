"""A ``url`` job's host must be on a public address unless ALLOW_PRIVATE_VIDEO_HOSTS: the
pre-flight resolves it once, checks every address, connects to exactly the checked one, and
sends nothing to a non-public one (the job fails ``invalid_job``). Presigned S3 URLs (our own
S3, often on a private network) are not checked."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from contract.clip_rules import COMETAPI_RULES
from contract.jobs import S3Object, VideoUrl
from contract.settings import Settings
from tests.worker.preflight.hosts import MisbehavingHost, misbehaving_host
from worker.errors import InvalidJob, UpstreamDown, VideoRejected
from worker.preflight import Preflight, PreflightPass
from worker.preflight.addresses import ensure_public_host, is_public_address

NOT_PUBLIC = "the host is not a public address"


@pytest.fixture(scope="module")
def host(corpus: dict[str, bytes]) -> Iterator[MisbehavingHost]:
    with misbehaving_host(corpus["too_short.mp4"]) as running:
        yield running


@pytest.fixture
def guarded() -> Preflight:
    """As production has it: ALLOW_PRIVATE_VIDEO_HOSTS off."""
    return Preflight.from_settings(Settings(_env_file=None, preflight_clips=True))


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve the names of ``answers`` to those IPv4 addresses (other names as usual); the
    returned list fills with every name looked up."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        if host in answers:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
                for address in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def run_url(preflight: Preflight, url: str) -> None:
    preflight.run_once(VideoUrl(video_url=url), {"video_url": url}, PreflightPass())


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("fec0::1", False),  # site-local
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped: where the packets go
        ("::ffff:169.254.169.254", False),
        ("::ffff:8.8.8.8", True),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", True),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
    ],
)
def test_only_globally_reachable_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("route", ["clip", "stall-body"])
def test_a_callers_url_on_loopback_fails_invalid_job_and_nothing_is_sent(
    guarded: Preflight, host: MisbehavingHost, route: str
) -> None:
    before = host.requests

    with pytest.raises(InvalidJob) as caught:
        run_url(guarded, host.url(route))

    assert NOT_PUBLIC in caught.value.message
    assert caught.value.to_result_error().type == "invalid_job"
    assert host.requests == before


@pytest.mark.parametrize("hostname", ["localhost", "[::ffff:127.0.0.1]"])
def test_a_name_or_a_mapped_address_of_loopback_is_refused_too(
    guarded: Preflight, host: MisbehavingHost, hostname: str
) -> None:
    url = host.url("clip").replace("127.0.0.1", hostname)
    before = host.requests

    with pytest.raises(InvalidJob, match=NOT_PUBLIC):
        run_url(guarded, url)

    assert host.requests == before


def test_a_host_with_one_private_address_among_public_ones_is_refused_after_one_lookup(
    guarded: Preflight, host: MisbehavingHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up = fake_dns(monkeypatch, {"cdn.example.test": ["8.8.8.8", "127.0.0.1"]})
    url = host.url("clip").replace("127.0.0.1", "cdn.example.test")
    before = host.requests

    with pytest.raises(InvalidJob, match=NOT_PUBLIC):
        run_url(guarded, url)

    assert looked_up.count("cdn.example.test") == 1
    assert host.requests == before


def test_the_connection_goes_to_the_address_resolved_and_keeps_the_name_as_host(
    host: MisbehavingHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = Preflight(rules=COMETAPI_RULES, pool_size=1, private_hosts=True)
    looked_up = fake_dns(monkeypatch, {"clips.example.test": ["127.0.0.1"]})
    url = host.url("clip").replace("127.0.0.1", "clips.example.test") + "?named=1"
    port = url.split(":")[2].split("/")[0]

    with pytest.raises(VideoRejected):  # too_short.mp4: read, and stopped by its duration
        run_url(local, url)

    assert looked_up.count("clips.example.test") == 1  # once per connection: no second lookup
    assert host.host_headers[-1] == f"clips.example.test:{port}"


def test_allow_http_video_urls_does_not_open_private_hosts(host: MisbehavingHost) -> None:
    settings = Settings(_env_file=None, allow_http_video_urls=True)

    with pytest.raises(InvalidJob, match=NOT_PUBLIC):
        run_url(Preflight.from_settings(settings), host.url("clip"))


def test_allow_private_video_hosts_lets_a_local_stack_read_loopback(host: MisbehavingHost) -> None:
    settings = Settings(_env_file=None, allow_private_video_hosts=True)

    with pytest.raises(VideoRejected, match="duration rule"):
        run_url(Preflight.from_settings(settings), host.url("clip"))


def test_a_presigned_s3_url_on_a_private_network_is_read(
    guarded: Preflight, host: MisbehavingHost
) -> None:
    url = host.url("clip")

    with pytest.raises(VideoRejected, match="duration rule"):
        guarded.run_once(
            S3Object(bucket="bkt", key="too_short.mp4"), {"video_url": url}, PreflightPass()
        )


def test_an_unreachable_host_is_reported_without_network_detail(guarded: Preflight) -> None:
    url = "http://127.0.0.1:9/clip.mp4"

    with pytest.raises(UpstreamDown) as caught:
        guarded.run_once(S3Object(bucket="bkt", key="k.mp4"), {"video_url": url}, PreflightPass())

    assert (
        caught.value.message
        == "clip host unavailable for s3://bkt/k.mp4: the clip host could not be reached"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/a.mp4",
        "http://localhost/a.mp4",
        "https://[::ffff:10.0.0.1]/a.mp4",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
def test_ensure_public_host_refuses_a_non_public_host_without_connecting(url: str) -> None:
    with pytest.raises(InvalidJob, match=NOT_PUBLIC):
        ensure_public_host(url)


@pytest.mark.parametrize("url", ["https://8.8.8.8/a.mp4", "https://nothing-here.invalid/a.mp4"])
def test_ensure_public_host_passes_a_public_or_unresolvable_host(url: str) -> None:
    ensure_public_host(url)


def test_ensure_public_host_names_the_url_without_its_signature() -> None:
    with pytest.raises(InvalidJob) as caught:
        ensure_public_host("http://127.0.0.1/a.mp4?X-Amz-Signature=5ecret99")

    assert "5ecret99" not in caught.value.message
    assert caught.value.message.startswith("http://127.0.0.1/a.mp4?X-Amz-Signature=REDACTED: ")
