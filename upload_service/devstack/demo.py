"""The demo page's server (``upload_service.demo``) as a ``ManagedProcess``: started the same
way by ``make run`` and by the browser tests."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from upload_service.devstack.process import ManagedProcess


def demo_origins(port: int) -> list[str]:
    """The origins a browser may give the page on ``port`` (both loopback names): the API's
    ``cors.allow_origins`` must list them."""
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


def demo_process(workdir: Path, *, port: int, api_url: str, key_file: Path, max_uploads: int = 20) -> ManagedProcess:
    """``python -m upload_service.demo`` on 127.0.0.1:``port`` for the API at ``api_url``,
    minting tokens with the key in ``key_file``; ready when ``GET /livez`` answers."""
    url = f"http://127.0.0.1:{port}"
    (workdir / "run").mkdir(mode=0o700, exist_ok=True)

    def ready() -> bool:
        with urllib.request.urlopen(url + "/livez", timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)

    argv = [
        sys.executable, "-m", "upload_service.demo", "--port", str(port), "--api", api_url,
        "--key-file", str(key_file), "--max-uploads", str(max_uploads),
    ]
    return ManagedProcess(
        "demo-page", argv, log_path=workdir / "logs" / "demo.log", ready=ready, env=dict(os.environ), cwd=workdir,
        pid_path=workdir / "run" / "demo.pid",
    )
