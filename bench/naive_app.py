"""The naive FastAPI upload pattern, as an anchor for the ingest benchmarks. Not for use.

``POST /upload`` takes ``file: UploadFile`` (Starlette parses the whole multipart body first,
spooling the part to a temp file past 1 MiB), then ``data = await file.read()`` pulls the whole
file into memory and writes it out in one go. ``POST /raw`` is the same for a raw body
(``await request.body()``). No auth, no type sniffing, no limits, no hashing, no fsync, no
object store, no DB: everything ours does on top is extra work in this comparison.

Served by ``uvicorn --factory bench.naive_app:create_app`` with ``BENCH_NAIVE_DIR`` naming the
directory to write to.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fastapi import FastAPI, Request, UploadFile


def create_app(upload_dir: Path | None = None) -> FastAPI:
    directory = upload_dir or Path(os.environ["BENCH_NAIVE_DIR"])
    app = FastAPI()

    def store(data: bytes) -> dict[str, object]:
        name = uuid.uuid4().hex
        (directory / name).write_bytes(data)
        return {"id": name, "size": len(data)}

    @app.post("/upload", status_code=201)
    async def upload(file: UploadFile) -> dict[str, object]:
        data = await file.read()
        return store(data)

    @app.post("/raw", status_code=201)
    async def raw(request: Request) -> dict[str, object]:
        data = await request.body()
        return store(data)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    return app
