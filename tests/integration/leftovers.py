"""What an upload that ended early may leave behind, read back as a user would: multipart uploads
still open in S3, objects under the tenant's prefix, rows, spool files."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.fixtures.app import Client, LiveServer


def multipart_uploads(s3: Any, server: LiveServer, client: Client) -> list[dict[str, Any]]:
    response = s3.list_multipart_uploads(Bucket=server.settings.storage.originals_bucket, Prefix=f"{client.tenant}/")
    return list(response.get("Uploads", []))


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def assert_nothing_left(server: LiveServer, client: Client, s3: Any) -> None:
    assert wait_until(lambda: multipart_uploads(s3, server, client) == []), multipart_uploads(s3, server, client)
    assert server.store.list_keys(server.settings.storage.originals_bucket, f"{client.tenant}/") == []
    assert client.upload_count() == 0
    assert server.spool_entries() == []
