#!/usr/bin/env python3
"""Consume upload-service manifests: read each ``manifest.json``, report its outcome, and for a
``done`` upload download every artifact and check its size and SHA-256 against the manifest.

Feed it manifest keys, or S3 event notifications (the JSON S3 sends to SQS, SNS or Lambda when a
``manifest.json`` object is created):

    python consume_manifest.py --bucket upload-artifacts acme/3f0c.../manifest.json
    python consume_manifest.py --event notification.json      # or --event - for stdin

Prints one JSON line per manifest: ``{"bucket", "key", "upload_id", "status", "error",
"verified"}``. Exits 1 if any artifact is missing or does not match, 2 on a bad manifest.
Credentials, region and endpoint come from the usual AWS settings (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a non-AWS S3 such as SeaweedFS or MinIO, or
``--endpoint-url``). Needs only boto3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3

MANIFEST_NAME = "manifest.json"
SUPPORTED_VERSION = 1
CHUNK = 1024 * 1024


class BadManifest(Exception):
    """Not a manifest this consumer understands (or one pointing outside its own upload)."""


class ArtifactMismatch(Exception):
    """An artifact is missing or its bytes are not the ones the manifest lists."""


def keys_from_event(event: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(bucket, key)`` of each created ``manifest.json`` in an S3 event notification (keys in
    notifications are URL-encoded, spaces as ``+``). Other records, e.g. S3's test event, are skipped."""
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        if key.endswith("/" + MANIFEST_NAME):
            yield bucket, key


def read_manifest(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise BadManifest(f"{key}: not JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("version") != SUPPORTED_VERSION:
        raise BadManifest(f"{key}: not a version {SUPPORTED_VERSION} manifest")
    prefix = key[: -len(MANIFEST_NAME)]
    if prefix != f"{manifest.get('tenant')}/{manifest.get('upload_id')}/":
        raise BadManifest(f"{key}: the manifest names another upload")
    if manifest.get("status", "done") not in ("done", "failed"):
        raise BadManifest(f"{key}: unknown status {manifest.get('status')!r}")
    for artifact in manifest.get("artifacts", []):
        if not str(artifact.get("key", "")).startswith(prefix):
            raise BadManifest(f"{key}: artifact {artifact.get('name')!r} lies outside the upload's prefix")
    return manifest


def verify_artifact(s3: Any, bucket: str, artifact: dict[str, Any]) -> None:
    """Stream the object and compare its size and SHA-256 with the manifest's."""
    try:
        body = s3.get_object(Bucket=bucket, Key=artifact["key"])["Body"]
    except s3.exceptions.NoSuchKey:
        raise ArtifactMismatch(f"{artifact['name']}: missing") from None
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
    if size != artifact["size"] or digest.hexdigest() != artifact["sha256"]:
        raise ArtifactMismatch(f"{artifact['name']}: {size} bytes, sha256 {digest.hexdigest()} (manifest: "
                               f"{artifact['size']} bytes, sha256 {artifact['sha256']})")


def consume(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    """One manifest: its outcome, and for ``done`` the names of the artifacts verified."""
    manifest = read_manifest(s3, bucket, key)
    verified = []
    if manifest.get("status", "done") == "done":
        for artifact in manifest["artifacts"]:
            verify_artifact(s3, bucket, artifact)
            verified.append(artifact["name"])
    return {
        "bucket": bucket, "key": key, "upload_id": manifest["upload_id"], "status": manifest.get("status", "done"),
        "error": manifest.get("error"), "verified": verified,
    }


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("keys", nargs="*", help="manifest keys in --bucket")
    parser.add_argument("--bucket", help="the artifacts bucket (with keys)")
    parser.add_argument("--event", help="an S3 event notification JSON file ('-': stdin)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    args = parser.parse_args(list(argv) if argv is not None else None)

    targets: list[tuple[str, str]] = []
    if args.event:
        text = sys.stdin.read() if args.event == "-" else open(args.event, encoding="utf-8").read()
        targets += keys_from_event(json.loads(text))
    if args.keys:
        if not args.bucket:
            parser.error("keys need --bucket")
        targets += [(args.bucket, key) for key in args.keys]

    s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
    status = 0
    for bucket, key in targets:
        try:
            print(json.dumps(consume(s3, bucket, key), sort_keys=True), flush=True)
        except ArtifactMismatch as exc:
            print(f"MISMATCH {bucket}/{key}: {exc}", file=sys.stderr)
            status = max(status, 1)
        except BadManifest as exc:
            print(f"BAD MANIFEST {bucket}/{key}: {exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
