"""The demo page's own tiny backend: static files plus one endpoint that mints upload tokens.

It plays the part of *your* backend in the documented browser flow (docs/clients.md): it holds
the API key (read from ``--key-file`` on each mint, never sent to the page) and answers
``POST /token`` with a fresh short-lived upload token from ``POST /v1/upload-tokens``, plus the
API's address. The page then uploads to the API directly, on the API's origin (CORS).

Standard library only, one thread per request; it listens on loopback for the local stack.
Anyone who can reach it gets tokens for the dev tenant, so ``/token`` refuses requests whose
``Host`` is not this server's loopback address (DNS rebinding) or whose ``Origin`` is another
site's.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: The page's files, shipped in the package (pyproject package-data).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
}
_MINT_TIMEOUT_SECONDS = 10.0


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(api_url: str) -> str:
    """Scripts and styles from this origin only; requests to it and the API; images from
    anywhere (thumbnails are presigned URLs on the S3 host clients reach)."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"connect-src 'self' {origin_of(api_url)}; img-src 'self' data: http: https:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, api_url: str, key_file: Path, token_request: dict[str, Any]) -> None:
        super().__init__(address, DemoHandler)
        self.api_url = api_url.rstrip("/")
        self.key_file = key_file
        self.token_request = token_request
        port = self.server_address[1]
        self.hosts = {f"{address[0]}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}

    def mint_token(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of ``POST /v1/upload-tokens`` made with the key; the API's own error
        body on a refusal, a 502 in the same shape when the API can't be reached."""
        key = self.key_file.read_text().strip()
        request = urllib.request.Request(
            f"{self.api_url}/v1/upload-tokens",
            data=json.dumps(self.token_request).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=_MINT_TIMEOUT_SECONDS) as response:  # noqa: S310 - our own API
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except ValueError:
                return 502, _error("UPSTREAM_UNAVAILABLE", f"the API answered {exc.code} without a JSON body")
        except (OSError, ValueError) as exc:
            return 502, _error("UPSTREAM_UNAVAILABLE", f"the API at {self.api_url} can't be reached: {exc}")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": None, "details": None}}


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "upload-demo"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        sys.stderr.write(f"demo: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        if path == "/livez":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        if path not in STATIC:
            self._json(404, _error("NOT_FOUND", "no such page"))
            return
        name, content_type = STATIC[path]
        body = resources.files("upload_service.demo").joinpath(name).read_bytes()
        extra = {"Content-Security-Policy": content_security_policy(self.server.api_url)} if name.endswith(".html") else None
        self._send(200, body, content_type, extra)

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/token":
            self._json(404, _error("NOT_FOUND", "no such endpoint"))
            return
        host = self.headers.get("Host", "")
        origin = self.headers.get("Origin")
        if host not in self.server.hosts or (origin is not None and origin != f"http://{host}"):
            self._json(403, _error("FORBIDDEN", "tokens are only for this page"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 4096:
            self._json(413, _error("FILE_TOO_LARGE", "the token request takes no body"))
            return
        self.rfile.read(length)
        status, body = self.server.mint_token()
        if status == 201:
            body = {**body, "api": self.server.api_url}
        self._json(status, body)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m upload_service.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True, help="the API's URL as browsers reach it (nginx)")
    parser.add_argument("--key-file", required=True, type=Path, help="a file holding an API key with the upload scope")
    parser.add_argument("--max-uploads", type=int, default=20, help="uploads per token (one token per page view)")
    parser.add_argument("--ttl-seconds", type=int, default=900, help="life of each token")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token_request = {"ttl_seconds": args.ttl_seconds, "max_uploads": args.max_uploads, "metadata": {"source": "demo-page"}}
    server = DemoServer((args.host, args.port), api_url=args.api, key_file=args.key_file, token_request=token_request)
    print(f"demo page on http://{args.host}:{server.server_address[1]}/ (API {server.api_url})", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
