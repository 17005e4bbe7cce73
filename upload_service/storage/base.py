"""The object store interface the service and the workers need, defined by its callers.

A backend implements ``ObjectStore`` and translates every SDK error into ``StorageError``
(``ObjectNotFound`` for a missing key). Nothing outside a backend module imports an SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    sha256: str


#: Served inline (a page may also open them): raster images our pipelines re-encoded. ``<img>``
#: ignores Content-Disposition anyway; a navigation to anything else downloads it.
INLINE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp"})


def content_disposition(key: str) -> str:
    """The Content-Disposition a presigned GET of ``key`` answers with.

    ``attachment; filename="<name>"`` (the key's last segment, e.g. ``sanitized.pdf``) for all
    but raster images, which stay ``inline``: a sanitized PDF, ``info.json`` or
    ``manifest.json`` opened from a link must not render at the object store's origin, where
    a viewer's scripts or a browser's sniffing would run with that origin's privileges. Key
    names are checked by ``keys.check_key`` (``[a-z0-9._-]``), so no quoting is needed.
    """
    name = key.rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    kind = "inline" if extension in INLINE_EXTENSIONS else "attachment"
    return f'{kind}; filename="{name}"'


class ObjectWriter(Protocol):
    """One object written as its bytes arrive (the accept path's original).

    ``write`` takes bytes without waiting on the network (a backend that sends in the background
    bounds what it holds and says ``congested()`` until ``wait()`` — blocking — has let some of
    it go). ``commit(sha256)`` makes the object exist whole, or raises and leaves nothing;
    ``commit_async(sha256)`` is ``commit`` for the event loop: it never blocks the loop (the
    backend sends without a thread where it can, else commits in one).
    ``abort()`` discards everything written (safe to call twice, and after a failed commit).
    Errors are ``StorageError``s, raised by ``write``, ``wait`` or ``commit``/``commit_async``.
    """

    def write(self, data: bytes | memoryview) -> None: ...

    def congested(self) -> bool: ...

    def wait(self) -> None: ...

    def commit(self, sha256: str) -> StoredObject: ...

    async def commit_async(self, sha256: str) -> StoredObject: ...

    def abort(self) -> None: ...


class ObjectStore(Protocol):
    """Two buckets' worth of objects: ``originals`` (private) and ``artifacts`` (for consumers)."""

    def put_file(self, bucket: str, key: str, path: Path, *, content_type: str, sha256: str) -> StoredObject:
        """Store the file at ``path`` under ``key``; large files go up in parts."""
        ...

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str, sha256: str) -> StoredObject:
        ...

    def open_writer(self, bucket: str, key: str, *, content_type: str, size_hint: int | None = None) -> ObjectWriter:
        """A writer for ``key`` whose bytes are given as they arrive; nothing exists under
        ``key`` until its ``commit``.

        ``size_hint``, when the caller knows it, is the object's size or an upper bound on it
        (a raw body's Content-Length; a form's request length): S3 then cuts its parts so the
        body ends on a part boundary and no part is sent twice. A backend may ignore it."""
        ...

    def abort_stale_writes(self, bucket: str, *, older_than_seconds: float) -> int:
        """Abort what ``open_writer`` left unfinished longer ago than ``older_than_seconds`` (a
        process killed mid-upload): S3 multipart uploads, local temporary files. Writers in
        flight are younger than that, given a bound on how long an upload may take. Returns
        how many were removed."""
        ...

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Write the object to ``path`` (raises ObjectNotFound)."""
        ...

    def get_bytes(self, bucket: str, key: str) -> bytes:
        ...

    def exists(self, bucket: str, key: str) -> bool:
        ...

    def head(self, bucket: str, key: str) -> StoredObject:
        """Size, content type and sha256 of a stored object (raises ObjectNotFound)."""
        ...

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        ...

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        ...

    def presign_get(self, bucket: str, key: str, *, ttl_seconds: int) -> str:
        """A URL that fetches the object with plain HTTP until ``ttl_seconds`` have passed.

        The response carries ``content_disposition(key)``: every object but a raster image is a
        download (``attachment``), never a document rendered at the store's origin."""
        ...

    def ensure_buckets(self) -> None:
        """Create the configured buckets if missing (start-up of local runs)."""
        ...

    async def aclose(self) -> None:
        """Close what the store holds for the running event loop (connections of
        ``commit_async``); the API calls it at shutdown, on its loop."""
        ...

    def ping(self) -> None:
        """Raise StorageError unless the store answers (health checks)."""
        ...
