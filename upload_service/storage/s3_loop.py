"""A whole original's ``PutObject`` from the API's event loop, without a thread.

Every small upload ends in one ``PUT`` of its original (up to one part, held in memory). Sent
from a thread (``anyio.to_thread`` and ``DirectS3.put_object`` over urllib3), that ``PUT`` cost
1.57–1.67 ms of client CPU with 32 uploads in flight: the hand-offs, the GIL passed between 32
threads, ``http.client``'s pure-Python response parsing. Sent from the event loop it costs a
fraction of that, and the loop goes on serving meanwhile (docs/architecture.md, "A whole
original is PUT from the event loop"), over ``loop_http``'s kept-alive connections.

The request is ``DirectS3``'s: the same URL, headers and SigV4 signature (a fresh one per
attempt), the same retry policy (botocore's ``standard`` mode) and the same botocore
exceptions, so ``s3_errors.translated`` turns a failure into the same ``StorageError``. Timeouts
are ``connect_timeout_seconds`` (to connect) and ``read_timeout_seconds`` (between reads); TLS
is verified against botocore's CA bundle. One set of connections per event loop (the API
process has one), closed by ``aclose`` at the API's shutdown.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Mapping
from urllib.parse import urlsplit

import botocore.exceptions

from upload_service.settings import StorageSettings
from upload_service.storage import loop_http
from upload_service.storage.s3_direct import ATTEMPT_ERRORS, UNSIGNED_PAYLOAD, DirectS3, client_error, put_headers
from upload_service.storage.sigv4 import host_header

#: Each ``loop_http`` failure as the botocore exception urllib3's would be raised as.
_AS_BOTOCORE: dict[type[loop_http.LoopHttpError], type[botocore.exceptions.BotoCoreError]] = {
    loop_http.TlsError: botocore.exceptions.SSLError,
    loop_http.ConnectTimeout: botocore.exceptions.ConnectTimeoutError,
    loop_http.Unreachable: botocore.exceptions.EndpointConnectionError,
    loop_http.ReadTimeout: botocore.exceptions.ReadTimeoutError,
    loop_http.Broken: botocore.exceptions.ConnectionClosedError,
}


class LoopPuts:
    """``PutObject`` of bytes in memory, awaited on the running event loop."""

    def __init__(self, direct: DirectS3, settings: StorageSettings) -> None:
        self._direct = direct
        self._settings = settings
        self._tls: ssl.SSLContext | None = None
        self._endpoints: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, loop_http.Endpoint]] = (
            weakref.WeakKeyDictionary()
        )

    async def put_object(self, bucket: str, key: str, body: bytes | bytearray, *, content_type: str, sha256: str) -> None:
        """``DirectS3.put_object`` from the event loop: the server checks the bytes against
        ``sha256`` (hex). The caller must not change ``body`` meanwhile."""
        url = self._direct.url(bucket, key)
        headers = put_headers(len(body), content_type, sha256)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(url, headers, body)
            except ATTEMPT_ERRORS as exc:
                pause = self._direct.retry_pause(exc, attempt)
                if pause is None:
                    raise
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        """Close the running loop's connections (the API's shutdown)."""
        for endpoint in self._endpoints.pop(asyncio.get_running_loop(), {}).values():
            endpoint.close()

    async def _attempt(self, url: str, headers: Mapping[str, str], body: bytes | bytearray) -> None:
        signed = self._direct.signed_headers("PUT", url, headers, UNSIGNED_PAYLOAD)
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        try:
            response = await self._endpoint(f"{scheme}://{netloc}").request("PUT", "/" + path, signed, body)
        except loop_http.LoopHttpError as exc:
            raise _AS_BOTOCORE[type(exc)](endpoint_url=url.split("?", 1)[0], error=exc) from exc
        if response.status >= 300:
            raise client_error("PutObject", response.status, response.body, response.headers)

    def _endpoint(self, origin: str) -> loop_http.Endpoint:
        """The running loop's connections to ``origin`` (``scheme://host:port``)."""
        endpoints = self._endpoints.setdefault(asyncio.get_running_loop(), {})
        endpoint = endpoints.get(origin)
        if endpoint is None:
            parts = urlsplit(origin)
            https = parts.scheme == "https"
            endpoint = endpoints[origin] = loop_http.Endpoint(
                parts.hostname or "", parts.port or (443 if https else 80),
                tls=self._tls_context() if https else None, host_header=host_header(parts),
                connect_timeout=self._settings.connect_timeout_seconds,
                read_timeout=self._settings.read_timeout_seconds,
            )
        return endpoint

    def _tls_context(self) -> ssl.SSLContext:
        # TLS verified against botocore's bundle (read once, for an https endpoint only).
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self._direct.ca_bundle)
        return self._tls
