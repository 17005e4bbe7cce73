"""Object storage: the ``ObjectStore`` protocol (``base``), the key layout (``keys``) and its
backends (``s3``, ``local``).

``build_object_store`` is the one place that picks a backend from settings. It imports the S3
backend lazily, so importing this package (e.g. for ``keys``) does not import boto3.
"""

from __future__ import annotations

from upload_service.settings import StorageSettings
from upload_service.storage.base import ObjectStore, StoredObject

__all__ = ["ObjectStore", "StoredObject", "build_object_store"]


def build_object_store(settings: StorageSettings) -> ObjectStore:
    """The backend named by ``settings.backend``; connects to nothing until first used."""
    if settings.backend == "local":
        from upload_service.storage.local import LocalObjectStore

        return LocalObjectStore(settings.local_dir, buckets=(settings.originals_bucket, settings.artifacts_bucket))
    if settings.backend == "s3":
        from upload_service.storage.s3 import S3ObjectStore

        return S3ObjectStore(settings)
    raise ValueError(f"unknown storage backend {settings.backend!r}")
