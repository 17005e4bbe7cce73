"""A whole original's ``PutObject`` from the API's event loop, without a thread.

Every small upload ends in one ``PUT`` of its original (up to one part, held in memory). Sent
from a thread (``anyio.to_thread`` and ``DirectS3.put_object`` over urllib3), that ``PUT`` cost
1.57–1.67 ms of client CPU with 32 uploads in flight: the hand-offs, the GIL passed between 32
threads, ``http.client``'s pure-Python response parsing. Sent from the event loop over an
aiohttp connection pool it costs 0.52–0.90 ms, and the loop goes on serving meanwhile
(docs/architecture.md, "A whole original is PUT from the event loop").

The request is ``DirectS3``'s: the same URL, headers and SigV4 signature (a fresh one per
attempt), the same retry policy (botocore's ``standard`` mode) and the same botocore
exceptions, so ``s3_errors.translated`` turns a failure into the same ``StorageError``. Timeouts
are ``connect_timeout_seconds`` (to connect) and ``read_timeout_seconds`` (between reads); TLS
is verified against botocore's CA bundle. One connection pool per event loop (the API process
has one), closed by ``aclose`` at the API's shutdown.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Mapping

import aiohttp
import botocore.exceptions

from upload_service.settings import StorageSettings
from upload_service.storage.s3_direct import ATTEMPT_ERRORS, DirectS3, client_error, put_headers


class LoopPuts:
    """``PutObject`` of bytes in memory, awaited on the running event loop."""

    def __init__(self, direct: DirectS3, settings: StorageSettings) -> None:
        self._direct = direct
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_seconds, sock_read=settings.read_timeout_seconds
        )
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
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
                return await self._attempt(url, headers, body, sha256)
            except ATTEMPT_ERRORS as exc:
                pause = self._direct.retry_pause(exc, attempt)
                if pause is None:
                    raise
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        """Close the running loop's connections (the API's shutdown)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def _attempt(self, url: str, headers: Mapping[str, str], body: bytes | bytearray, sha256: str) -> None:
        signed = self._direct.signed_headers("PUT", url, headers, sha256)
        endpoint = url.split("?", 1)[0]
        try:
            async with self._session().put(url, data=body, headers=signed, allow_redirects=False) as response:
                data = await response.read()
        except aiohttp.ClientSSLError as exc:
            raise botocore.exceptions.SSLError(endpoint_url=endpoint, error=exc) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url=endpoint, error=exc) from exc
        except aiohttp.ClientConnectorError as exc:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=endpoint, error=exc) from exc
        except (aiohttp.SocketTimeoutError, asyncio.TimeoutError) as exc:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=endpoint, error=exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Reset, closed or broken connections (also a body that could not be sent).
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=endpoint, error=exc) from exc
        if response.status >= 300:
            raise client_error("PutObject", response.status, data, response.headers)

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            # TLS verified against botocore's bundle (read only for an https endpoint).
            tls = ssl.create_default_context(cafile=self._direct.ca_bundle) if self._direct.https else True
            # No headers of its own (the signed ones are all there is) and no decompression.
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=tls), timeout=self._timeout, auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
            self._sessions[loop] = session
        return session
