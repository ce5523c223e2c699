"""The pre-flight's HTTP connections: resolved once, checked, and cut at the probe's deadline.

Each connection resolves its host itself, once, and connects to the resolved addresses in turn;
a ``public_only`` one first checks every address (``addresses.py``) and connects to nothing
when one is not public. The hostname stays the connection's ``host``: the ``Host`` header and
TLS SNI and certificate checks use it, only the socket goes to the checked address. Every socket
a connection opens or reuses is handed to the deadline of the request in flight
(``deadline.py``), which shuts it down when the probe runs out of time.

:func:`preflight_session` mounts them on a ``requests.Session`` through an adapter whose pool
manager makes its connection pools with these classes.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from worker.preflight.addresses import AddressInfo, require_public, resolve
from worker.preflight.deadline import adopt_socket


class PreflightConnection(HTTPConnection):
    """An ``http`` connection of the pre-flight."""

    #: Connect only when every address the host resolves to is public.
    public_only: ClassVar[bool] = False

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        if self.public_only:
            require_public(addresses)  # NonPublicHost: nothing is sent anywhere
        try:
            sock = _connect_to_any(self, addresses)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
        except OSError as exc:
            raise NewConnectionError(self, "Failed to establish a new connection") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock

    def connect(self) -> None:
        super().connect()
        adopt_socket(self.sock)  # a new connection (for TLS, once the handshake is done)

    def request(self, *args: Any, **kwargs: Any) -> None:
        adopt_socket(self.sock)  # a reused connection; a new one is adopted as it connects
        super().request(*args, **kwargs)


class PreflightTLSConnection(PreflightConnection, HTTPSConnection):
    """An ``https`` connection of the pre-flight."""


class PublicConnection(PreflightConnection):
    public_only = True


class PublicTLSConnection(PublicConnection, HTTPSConnection):
    public_only = True


_CONNECTIONS: dict[tuple[str, bool], type[HTTPConnection]] = {
    ("http", False): PreflightConnection,
    ("https", False): PreflightTLSConnection,
    ("http", True): PublicConnection,
    ("https", True): PublicTLSConnection,
}


def _connect_to_any(conn: HTTPConnection, addresses: list[AddressInfo]) -> socket.socket:
    """A socket connected to the first of ``addresses`` that accepts (each a numeric address:
    no second lookup), with the connection's timeout and socket options."""
    failure: OSError = OSError("no address to connect to")
    for info in addresses:
        try:
            return connection.create_connection(
                (str(info[4][0]), conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:
            failure = exc
    raise failure


class _PreflightPoolManager(PoolManager):
    def __init__(self, *, public_only: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._public_only = public_only

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = _CONNECTIONS[(scheme, self._public_only)]
        return pool


class PreflightAdapter(HTTPAdapter):
    """Pools of pre-flight connections; no retries (a failure is the probe's to judge)."""

    def __init__(self, *, public_only: bool, pool_maxsize: int) -> None:
        self._public_only = public_only  # read by init_poolmanager, from the base __init__
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _PreflightPoolManager(
            public_only=self._public_only,
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            **pool_kwargs,
        )


def preflight_session(*, pool_size: int, public_only: bool) -> requests.Session:
    """A session for ranged reads of clips, its connections checked when ``public_only``."""
    session = requests.Session()
    # No proxy scan of the environment on every read (docs/calibration.md, trap 4).
    session.trust_env = False
    adapter = PreflightAdapter(public_only=public_only, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
