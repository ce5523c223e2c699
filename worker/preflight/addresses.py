"""Which addresses a caller's ``url`` clip may be read from: public ones only (docs/preflight.md).

A ``url`` job names a host of the caller's choosing; read from inside the fleet, a loopback,
private or link-local address would reach cloud metadata or internal services. So a host is
resolved once, every address it resolves to is checked, and the pre-flight connects to exactly
the checked address (``connections.py``): a second lookup could answer otherwise (DNS
rebinding). ``ALLOW_PRIVATE_VIDEO_HOSTS`` (local stacks) lifts the check; presigned S3 URLs
point at our own S3 and are never checked.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from urllib3.util.connection import allowed_gai_family

from contract.redaction import redact_url
from worker.errors import InvalidJob

#: One ``socket.getaddrinfo`` answer: family, type, protocol, canonical name, socket address.
AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NAT64's well-known prefix: the last 32 bits are an IPv4 address a NAT64 gateway would reach.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Deprecated IPv4-compatible addresses (``::a.b.c.d``), and ``::``/``::1`` among them.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class NonPublicHost(Exception):
    """A caller's host resolved to an address that is not public; nothing was sent to it.

    Not an ``OSError``: urllib3 and requests let it through unwrapped, so it is never taken for a
    connection failure (and retried).
    """


def non_public_host_error(where: str) -> InvalidJob:
    """The job's failure when ``where`` (a redacted URL) names a host on a non-public address."""
    return InvalidJob(
        f"{where}: the host is not a public address (ALLOW_PRIVATE_VIDEO_HOSTS is off)"
    )


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is globally reachable unicast, including what an IPv6 address wraps.

    IPv4-mapped (``::ffff:127.0.0.1``), NAT64 and 6to4 addresses are judged by the IPv4 address
    they carry, which is where the packets end up.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if address in _IPV4_COMPATIBLE or address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def resolve(host: str, port: int) -> list[AddressInfo]:
    """``host``'s TCP addresses, in the order to try them (one lookup; raises ``OSError``)."""
    return list(socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM))


def address_of(info: AddressInfo) -> IPAddress:
    """The IP address of one resolved ``info`` (an IPv6 scope id is kept, and ignored)."""
    return ipaddress.ip_address(str(info[4][0]))


def require_public(addresses: list[AddressInfo]) -> None:
    """Raise :class:`NonPublicHost` unless every one of ``addresses`` is public.

    All of them, not just the first: a host that also resolves to a private address is refused
    whichever address a connection would have used.
    """
    if not all(is_public_address(address_of(info)) for info in addresses):
        raise NonPublicHost("the host is not a public address")


def ensure_public_host(url: str) -> None:
    """Raise :class:`~worker.errors.InvalidJob` when ``url``'s host resolves to a non-public
    address; nothing is connected to. For ``url`` jobs when the pre-flight is off.

    A host that does not resolve passes: there is nothing the worker could reach, and the API
    judges the URL (the pre-flight, which must connect, calls it unreachable instead).
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
        addresses = resolve(parts.hostname, port)
    except (OSError, UnicodeError, ValueError):  # no such host, or a port out of range
        return
    try:
        require_public(addresses)
    except NonPublicHost:
        raise non_public_host_error(redact_url(url)) from None
