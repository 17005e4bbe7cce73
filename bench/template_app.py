"""The usual FastAPI production upload template, made durable the way a careful user would.

An anchor for the small-upload benchmark, not for use. What it does per upload, as a careful
user writes it from the well-known article pattern:

- ``file: UploadFile``, the client's declared content type checked against an allow list (415
  otherwise), ``data = await file.read()``, a size check;
- one hand-off to the thread pool for the blocking work: boto3 ``put_object`` to S3 (one client
  per process, made at start-up), one row through a SQLAlchemy ``Session`` (one engine per
  process; SQLite with WAL and a busy timeout, as several processes write to it), an RQ
  ``enqueue`` (one Redis connection pool per process);
- an audit log line through ``BackgroundTasks`` (a JSON line to a file, after the response);
- ``201`` with the id.

No auth, no sniffing of the bytes, no streaming, no hashing, no per-type limits, no admission,
and the audit line can be lost if the process dies after answering. Served by ``uvicorn
--workers N --factory bench.template_app:create_app`` with its settings in ``BENCH_TEMPLATE_*``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException, UploadFile
from sqlalchemy import BigInteger, Engine, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.concurrency import run_in_threadpool

ALLOWED_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "application/pdf"})
MAX_BYTES = 20 * 1024 * 1024
QUEUE = "template-uploads"


class Base(DeclarativeBase):
    pass


class TemplateUpload(Base):
    __tablename__ = "template_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float]


def engine_for(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Sized for the thread pool's concurrency: with SQLAlchemy's default (5 + 10 overflow) the
    # overflow connections are closed on return and PostgreSQL forks a new backend for most uploads.
    engine = create_engine(url, pool_size=24, max_overflow=8)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def create_schema(url: str) -> None:
    """Made once before the processes start (several processes must not race on it)."""
    engine = engine_for(url)
    Base.metadata.create_all(engine)
    engine.dispose()


def process_upload(upload_id: str) -> None:
    """The job's function (no worker runs during the bench)."""


def create_app() -> FastAPI:
    import boto3
    import redis
    from botocore.config import Config
    from rq import Queue

    env = os.environ
    bucket = env["BENCH_TEMPLATE_BUCKET"]
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=env["BENCH_TEMPLATE_S3_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id=env["BENCH_TEMPLATE_S3_KEY"], aws_secret_access_key=env["BENCH_TEMPLATE_S3_SECRET"],
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", max_pool_connections=64),
    )
    engine = engine_for(env["BENCH_TEMPLATE_DATABASE_URL"])
    queue = Queue(QUEUE, connection=redis.Redis.from_url(env["BENCH_TEMPLATE_REDIS_URL"]))
    audit = logging.getLogger("template.audit")
    audit.propagate = False
    if not audit.handlers:
        audit.addHandler(logging.FileHandler(env["BENCH_TEMPLATE_AUDIT_LOG"]))
        audit.setLevel(logging.INFO)

    app = FastAPI()

    def store(upload_id: str, filename: str, content_type: str, data: bytes) -> None:
        key = f"originals/{upload_id}"
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        with Session(engine) as session, session.begin():
            session.add(TemplateUpload(
                id=upload_id, filename=filename, content_type=content_type, size=len(data),
                object_key=key, created_at=time.time(),
            ))
        queue.enqueue(process_upload, upload_id)

    @app.post("/v1/uploads", status_code=201)
    async def upload(file: UploadFile, background_tasks: BackgroundTasks) -> dict[str, object]:
        if file.content_type not in ALLOWED_TYPES:
            raise HTTPException(status_code=415, detail="unsupported file type")
        data = await file.read()
        if len(data) > MAX_BYTES:
            raise HTTPException(status_code=413, detail="file too large")
        upload_id = uuid.uuid4().hex
        filename = file.filename or "upload"
        await run_in_threadpool(store, upload_id, filename, file.content_type, data)
        background_tasks.add_task(
            audit.info, json.dumps({"event": "upload:accepted", "id": upload_id, "size": len(data), "at": time.time()})
        )
        return {"id": upload_id, "size": len(data)}

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    return app
