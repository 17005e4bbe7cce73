"""The nginx front, rendered from the app's own settings (``upload-service nginx-config``).

Why a renderer rather than a hand-kept config: the body cap nginx enforces must be the same
number the app's per-type limits are validated against (``limits.max_body_bytes``), and the
timeouts, rate limits and error bodies must stay in the API's error contract. Rendering from one
``Settings`` object makes drift impossible; ``--check`` runs ``nginx -t`` on the result.

``render_nginx_config`` is pure (settings in, text out); only ``check_nginx_config`` touches the
disk and runs nginx. The command's options and output are ``upload_service/cli/nginx.py``. The
template is ``nginx/nginx.conf.j2``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from upload_service.errors import ErrorCode
from upload_service.settings import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, Settings

TEMPLATE_NAME = "nginx.conf.j2"
#: A relative prefix leaves pid, log and temp paths relative: nginx resolves them against ``-p``.
DEFAULT_PREFIX = Path(".")
#: Same rule as ``upload_service.api.requestid`` (a unit test keeps the two equal).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"
UPLOAD_PATH = "/v1/uploads"
#: Refused (404) on the public listener; proxied on ``nginx.internal_listen`` when set.
#: ``/docs`` (the ReDoc API reference) and ``/openapi.json`` it reads are for operators, like the rest.
INTERNAL_PATHS = ("/metrics", "/v1/audit", "/admin", "/health", "/docs", "/openapi.json")
HEALTH_PATHS = ("/livez", "/readyz")
CSP = "default-src 'none'; frame-ancestors 'none'"
#: The API reference (ReDoc, on the internal listener only): its bundle, styles and fonts come
#: from their CDNs, the document from ``/openapi.json`` on the same listener.
DOCS_PATH = "/docs"
DOCS_CSP = (
    "default-src 'none'; script-src https://cdn.jsdelivr.net; style-src 'unsafe-inline' https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https:; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'"
)

_UPSTREAM = re.compile(r"^(unix:/[^\s;{}'\"#]+|[A-Za-z0-9.-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5})$")
_LISTEN = re.compile(r"^(unix:/[^\s;{}'\"#]+|[A-Za-z0-9.-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}|\d{1,5})$")
_HOST = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]|\*)$")
_SIZE = re.compile(r"^\d+[kKmM]?$")
_BUFFERS = re.compile(r"^\d+ \d+[kKmM]?$")
_PATH = re.compile(r"^[^\s;{}'\"#$\\]+$")
#: What the cors settings validator lets through; checked again here, as nothing else may reach
#: the config: scheme://host[:port], lower case, no quotes, spaces or semicolons.
_ORIGIN = re.compile(r"^https?://[a-z0-9.\-\[\]:]+$")


class NginxConfigError(ValueError):
    """A setting that can't be rendered into a safe, valid nginx config."""


@dataclass(frozen=True)
class ErrorPage:
    """An error nginx itself generates (``trigger``), answered in the API's JSON error shape."""

    trigger: int
    code: ErrorCode
    message: str
    status: int = 0  # 0: the code's own status

    @property
    def sent_status(self) -> int:
        return self.status or self.code.status

    @property
    def target(self) -> str:
        """Where ``error_page`` sends it. A request whose request line never parsed has no URI,
        and nginx refuses to redirect those to a named location (500 "empty URI in redirect to
        named location"), so 400 and 414 go to an internal URI instead. The others use a named
        location, which keeps ``$uri`` (and so the 413 limit) of the original request."""
        if self.trigger in (400, 414):
            return f"/_upload_error/{self.trigger}"
        return f"@upload_error_{self.trigger}"

    @property
    def location(self) -> str:
        return self.target if self.target.startswith("@") else f"= {self.target}"

    @property
    def body(self) -> str:
        """The JSON body, with nginx variables for the request id (and the 413 limit)."""
        details: object = {"limit_bytes": 0} if self.code is ErrorCode.FILE_TOO_LARGE else None
        error = {"code": self.code.value, "message": self.message, "request_id": "@ID@", "details": details}
        text = json.dumps({"error": error}, separators=(",", ":"))
        text = text.replace('"@ID@"', '"${upload_request_id}"')
        return text.replace('"limit_bytes":0', '"limit_bytes":${upload_body_limit_bytes}')


#: Every error nginx can answer by itself. nginx reports too-large headers as its internal 494
#: (and an over-long request line as 414); both become 431 HEADERS_TOO_LARGE.
ERROR_PAGES: tuple[ErrorPage, ...] = (
    ErrorPage(400, ErrorCode.BAD_REQUEST, "the request is malformed"),
    ErrorPage(404, ErrorCode.NOT_FOUND, "no such resource"),
    # nginx 1.22 closes a timed-out connection without answering (it logs 408); kept for any
    # path or build that does answer, so it can never be HTML.
    ErrorPage(408, ErrorCode.REQUEST_TIMEOUT, "the request was not received in time"),
    ErrorPage(413, ErrorCode.FILE_TOO_LARGE, "the request body exceeds the limit of ${upload_body_limit_bytes} bytes"),
    ErrorPage(414, ErrorCode.HEADERS_TOO_LARGE, "the request line is too long"),
    ErrorPage(429, ErrorCode.RATE_LIMITED, "too many requests; slow down and retry later"),
    ErrorPage(494, ErrorCode.HEADERS_TOO_LARGE, "the request headers are too large"),
    ErrorPage(500, ErrorCode.INTERNAL, "internal error"),
    ErrorPage(502, ErrorCode.UPSTREAM_UNAVAILABLE, "the API is not reachable; retry later"),
    ErrorPage(503, ErrorCode.DEPENDENCY_UNAVAILABLE, "the service is temporarily unavailable; retry later"),
    ErrorPage(504, ErrorCode.UPSTREAM_UNAVAILABLE, "the API did not answer in time; retry later", status=504),
)


def template_dir() -> Path:
    """The template's directory: packaged next to the code if shipped so, else the checkout's."""
    here = Path(__file__).resolve().parent
    packaged = here / "nginx"
    if (packaged / TEMPLATE_NAME).is_file():
        return packaged
    return here.parent / "nginx"


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise NginxConfigError(f"nginx.{what}={value!r} is not valid here")
    return value


def _validated(settings: Settings) -> None:
    """Refuse values that would break (or inject into) the config; pydantic checked the rest."""
    n = settings.nginx
    for upstream in n.upstreams:
        _check(_UPSTREAM, upstream, "upstreams entry (host:port or unix:/path)")
    _check(_HOST, n.listen_host, "listen_host")
    if n.internal_listen is not None:
        _check(_LISTEN, n.internal_listen, "internal_listen (host:port, port or unix:/path)")
    _check(_SIZE, n.client_header_buffer_size, "client_header_buffer_size")
    _check(_BUFFERS, n.large_client_header_buffers, "large_client_header_buffers (e.g. '4 8k')")
    for name in ("tls_certificate", "tls_certificate_key"):
        path = getattr(n, name)
        if path is not None:
            _check(_PATH, str(path), name)
    for origin in settings.cors.allow_origins:
        if not _ORIGIN.match(origin):
            raise NginxConfigError(f"cors.allow_origins entry {origin!r} is not an exact origin")
    if n.max_json_body_bytes > settings.limits.max_body_bytes:
        raise NginxConfigError(
            f"nginx.max_json_body_bytes={n.max_json_body_bytes} exceeds limits.max_body_bytes="
            f"{settings.limits.max_body_bytes}: the cap on other routes can't exceed the upload cap"
        )


def _paths(prefix: Path) -> dict[str, str]:
    if not _PATH.match(str(prefix)):
        raise NginxConfigError(f"prefix {str(prefix)!r} has characters nginx paths can't hold")
    names = {
        "pid": "nginx.pid",
        "error_log": "logs/error.log",
        "access_log": "logs/access.log",
        "client_body_temp": "temp/client_body",
        "proxy_temp": "temp/proxy",
        "fastcgi_temp": "temp/fastcgi",
        "uwsgi_temp": "temp/uwsgi",
        "scgi_temp": "temp/scgi",
    }
    return {key: str(prefix / relative) for key, relative in names.items()}


def render_nginx_config(
    settings: Settings, prefix: Path = DEFAULT_PREFIX, *, user: str | None = None, temp_dir: Path | None = None
) -> str:
    """The nginx config for these settings; pid, logs and temp files under ``prefix``.

    ``user`` is rendered as nginx's ``user`` directive (e.g. ``nobody nogroup``: the local run
    as root names its unprivileged worker user); it is omitted otherwise. ``temp_dir`` moves
    the ``*_temp_path`` directories (which the workers write) out of ``prefix``.
    """
    _validated(settings)
    if user is not None and not re.match(r"^[a-z_][a-z0-9_-]*( [a-z_][a-z0-9_-]*)?$", user):
        raise NginxConfigError(f"user {user!r} is not a valid user name")
    paths = _paths(prefix)
    if temp_dir is not None:
        for key, relative in _paths(Path(temp_dir)).items():
            if key.endswith("_temp"):
                paths[key] = relative
    n = settings.nginx
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["nginx_regex"] = _regex_literal
    return environment.get_template(TEMPLATE_NAME).render(
        n=n,
        limits=settings.limits,
        paths=paths,
        prefix=prefix,
        prefix_is_relative=not prefix.is_absolute(),
        user=user,
        tls=n.tls_certificate is not None,
        listen=f"{n.listen_host}:{n.listen_port}",
        csp=CSP,
        docs_path=DOCS_PATH,
        rate_limit_retry_after=rate_limit_retry_after(settings),
        docs_csp=DOCS_CSP,
        request_id_pattern=REQUEST_ID_PATTERN,
        upload_path=UPLOAD_PATH,
        internal_paths=list(INTERNAL_PATHS),
        health_paths=list(HEALTH_PATHS),
        error_pages=ERROR_PAGES,
        cors_origins=list(settings.cors.allow_origins),
        cors_max_age=settings.cors.max_age,
        cors_allow_methods=", ".join(CORS_ALLOW_METHODS),
        cors_allow_headers=", ".join(CORS_ALLOW_HEADERS),
        cors_expose_headers=", ".join(CORS_EXPOSE_HEADERS),
    )


def _regex_literal(text: str) -> str:
    """``text`` matched literally by nginx's PCRE (origins hold only [a-z0-9.:/[]-])."""
    return re.sub(r"([.\[\]\\^$|?*+(){}])", r"\\\1", text)


def rate_limit_retry_after(settings: Settings) -> int:
    """``Retry-After`` of nginx's 429: one period of the slowest rate (a request is let through
    again within it), 1 s for ``r/s`` rates, 60 s once either rate is per minute."""
    n = settings.nginx
    return 60 if any(rate.endswith("r/m") for rate in (n.upload_rate, n.api_rate)) else 1


@dataclass(frozen=True)
class Enforcement:
    """One limit: which layer applies it, its value, and what a client sees at the limit."""

    layer: str
    what: str
    value: str
    client_sees: str


def enforcement_rows(settings: Settings) -> list[Enforcement]:
    """Who enforces what, for ``--check`` (docs/operations.md has the same table, with env names)."""
    n, limits = settings.nginx, settings.limits
    nginx_json, app_json = "(nginx JSON)", "(app JSON; partial spool file removed)"
    too_large = "413 FILE_TOO_LARGE"
    rows = [
        ("nginx", f"body cap, POST {UPLOAD_PATH}", f"{limits.max_body_bytes} bytes", f"{too_large} {nginx_json}"),
        ("nginx", "body cap, other routes", f"{n.max_json_body_bytes} bytes", f"{too_large} {nginx_json}"),
        ("app", "image limit (detected type)", f"{limits.max_image_bytes} bytes", f"{too_large} {app_json}"),
        ("app", "PDF limit (detected type)", f"{limits.max_pdf_bytes} bytes", f"{too_large} {app_json}"),
        ("both", "whole-body cap", f"{limits.max_body_bytes} bytes", "nginx's cap IS the app's limits.max_body_bytes"),
        ("nginx", "client_header_timeout", f"{n.client_header_timeout_seconds}s", "connection closed, no response"),
        ("nginx", "client_body_timeout", f"{n.client_body_timeout_seconds}s", "connection closed, no response"),
        ("nginx", "send_timeout", f"{n.send_timeout_seconds}s", "connection closed"),
        ("nginx", "proxy_read_timeout", f"{n.proxy_read_timeout_seconds}s", f"504 UPSTREAM_UNAVAILABLE {nginx_json}"),
        ("nginx", "limit_req uploads", f"{n.upload_rate} burst {n.upload_burst}", f"429 RATE_LIMITED {nginx_json}"),
        ("nginx", "limit_req other routes", f"{n.api_rate} burst {n.api_burst}", f"429 RATE_LIMITED {nginx_json}"),
        ("nginx", "limit_conn per client", str(n.conn_per_client), f"429 RATE_LIMITED {nginx_json}"),
        (
            "nginx", "client address for limits, logs, audit",
            f"{n.real_ip_header} from {', '.join(n.real_ip_from)}" if n.real_ip_from else "the TCP peer",
            "behind a load balancer, set nginx.real_ip_from or every client shares its bucket",
        ),
        ("nginx", "header buffers", n.large_client_header_buffers, f"431 HEADERS_TOO_LARGE {nginx_json}"),
        ("nginx", "upstreams", ", ".join(n.upstreams), f"502 UPSTREAM_UNAVAILABLE {nginx_json} when none answers"),
        ("nginx", f"public {', '.join(INTERNAL_PATHS)}", n.internal_listen or "not served", f"404 NOT_FOUND {nginx_json}"),
        _cors_row(settings),
    ]
    return [Enforcement(*row) for row in rows]


def _cors_row(settings: Settings) -> tuple[str, str, str, str]:
    origins = settings.cors.allow_origins
    if not origins:
        return ("both", "CORS", "no origins", "no CORS headers: pages on other origins can't call the API")
    return (
        "both",
        "CORS (cors.allow_origins)",
        ", ".join(origins),
        f"preflights 204 from nginx (not rate limited, max-age {settings.cors.max_age}s); "
        "Access-Control-Allow-Origin on app and nginx answers for these origins only",
    )


def format_enforcement(rows: list[Enforcement]) -> str:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("layer", "what", "value")]
    lines = []
    for r in rows:
        lines.append(f"{r.layer:<{widths[0]}}  {r.what:<{widths[1]}}  {r.value:<{widths[2]}}  -> {r.client_sees}")
    return "\n".join(lines)


def find_nginx() -> str:
    """``nginx`` on PATH, else Debian's /usr/sbin/nginx (often not on a user's PATH)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise FileNotFoundError("nginx not found (Debian: apt-get install nginx-light)")
    return found


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str


def check_nginx_config(settings: Settings, *, nginx: str | None = None) -> CheckResult:
    """``nginx -t`` on the config rendered for a throw-away prefix (the real one may not exist)."""
    binary = nginx or find_nginx()
    with tempfile.TemporaryDirectory(prefix="upload-nginx-check-") as tmp:
        prefix = Path(tmp)
        (prefix / "logs").mkdir()
        (prefix / "temp").mkdir()
        config = prefix / "nginx.conf"
        config.write_text(render_nginx_config(settings, prefix))
        proc = subprocess.run(
            [binary, "-t", "-p", f"{prefix}/", "-c", str(config), "-e", str(prefix / "logs" / "error.log")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    output = (proc.stdout + proc.stderr).replace(tmp, "<prefix>").strip()
    return CheckResult(ok=proc.returncode == 0, output=output)


#: ingress-nginx's annotation prefix.
INGRESS_PREFIX = "nginx.ingress.kubernetes.io/"


def _ingress_rate(rate: str, burst: int) -> dict[str, str]:
    """``limit_req`` as ingress-nginx annotations: ``limit-rps``/``limit-rpm``, and the burst as
    its multiplier of the rate (ingress-nginx's burst is rate × multiplier, at least 1×)."""
    number, unit = rate[:-3], rate[-1]
    per = "limit-rps" if unit == "s" else "limit-rpm"
    multiplier = max(1, -(-burst // int(number)))
    return {per: number, "limit-burst-multiplier": str(multiplier)}


def ingress_annotations(settings: Settings) -> dict[str, dict[str, str]]:
    """The nginx front's limits as ingress-nginx settings, from the same ``Settings``.

    ``uploads`` and ``api`` are the annotations of two Ingress objects (``POST /v1/uploads``
    needs its own body cap and unbuffered streaming; ingress-nginx applies annotations per
    Ingress); ``controller`` holds what ingress-nginx only takes in its ConfigMap (timeouts on
    the client side, header buffers, the real client address).
    """
    _validated(settings)
    n, limits = settings.nginx, settings.limits
    proxy = {
        "proxy-http-version": "1.1",
        "proxy-connect-timeout": "5",
        "proxy-send-timeout": str(n.proxy_read_timeout_seconds),
        "proxy-read-timeout": str(n.proxy_read_timeout_seconds),
        "limit-connections": str(n.conn_per_client),
    }
    uploads = {
        "proxy-body-size": str(limits.max_body_bytes),
        "proxy-request-buffering": "off",
        "proxy-buffering": "off",
        "client-body-buffer-size": str(n.upload_body_buffer_bytes),
        **proxy,
        **_ingress_rate(n.upload_rate, n.upload_burst),
    }
    api = {"proxy-body-size": str(n.max_json_body_bytes), **proxy, **_ingress_rate(n.api_rate, n.api_burst)}
    controller = {
        "client-header-timeout": str(n.client_header_timeout_seconds),
        "client-body-timeout": str(n.client_body_timeout_seconds),
        "keep-alive": str(n.keepalive_timeout_seconds),
        "keep-alive-requests": str(n.keepalive_requests),
        "upstream-keepalive-connections": str(n.upstream_keepalive),
        "client-header-buffer-size": n.client_header_buffer_size,
        "large-client-header-buffers": n.large_client_header_buffers,
        "server-tokens": "false",
        "limit-req-status-code": "429",
        "limit-conn-status-code": "429",
    }
    if n.real_ip_from:
        # ingress-nginx trusts every address (proxy-real-ip-cidr 0.0.0.0/0) unless told: the
        # CIDRs always come with the switch. use-forwarded-headers also believes X-Forwarded-Proto
        # and -Host from them; enable-real-ip takes just the address from another header.
        switch = "use-forwarded-headers" if n.real_ip_header.lower() == "x-forwarded-for" else "enable-real-ip"
        controller |= {
            switch: "true",
            "forwarded-for-header": n.real_ip_header,
            "proxy-real-ip-cidr": ",".join(n.real_ip_from),
        }
    prefixed = {name: {INGRESS_PREFIX + k: v for k, v in sorted(a.items())} for name, a in (("uploads", uploads), ("api", api))}
    return {**prefixed, "controller": dict(sorted(controller.items()))}


def format_ingress_annotations(settings: Settings) -> str:
    """``ingress_annotations`` as YAML (every value a quoted string, as Kubernetes wants)."""
    lines = [
        "# Rendered by `upload-service nginx-config --ingress-annotations` from the service's settings.",
        "# uploads: annotations of the Ingress for POST /v1/uploads (pathType Exact)",
        "# api: annotations of the Ingress for every other public path",
        "# controller: keys of the ingress-nginx controller's ConfigMap",
    ]
    for section, values in ingress_annotations(settings).items():
        lines.append(f"{section}:")
        lines += [f"  {key}: {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"

