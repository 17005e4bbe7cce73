"""Browsers upload: a real headless Chromium, pages on their own origins, the API behind the real
nginx on another origin, real workers and SeaweedFS.

- the demo page (``upload_service.demo``, as ``make run`` serves it) gets a token from its own
  backend, uploads a JPEG and a PDF with upload progress, polls to ``done`` and shows the 256 px
  thumbnail from a presigned URL; its refusals show the JSON error and the request id;
- a real Uppy (the npm bundle) uploads with XHRUpload: its meta fields land in ``metadata`` and
  its ``restrictions`` are those of ``GET /v1/limits``;
- a page reads the JSON body and ``X-Request-ID`` of the app's ``415`` and of nginx's own ``413``;
- a page on an origin that is not allowed gets no response it can read.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer, make_settings, start_api
from tests.fixtures.browser import StaticSite
from tests.fixtures.nginx import NginxFront, start_front
from tests.fixtures.services import RedisService, S3Service
from tests.fixtures.workers import start_worker_process
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.db.migrate import upgrade_to_head
from upload_service.devstack.demo import demo_origins, demo_process
from upload_service.devstack.process import ManagedProcess, free_port
from upload_service.storage import build_object_store

MiB = 1024 * 1024
#: nginx's body cap in this module: small, so a body over it is cheap to send from a page.
BODY_CAP = 2 * MiB
REQUEST_ID = r"^[A-Za-z0-9._-]{8,}$"


@dataclass
class BrowserStack:
    server: LiveServer
    front: NginxFront
    client: Client
    demo_url: str
    pages: StaticSite  # an allowed origin, for the Uppy page and hand-written XHRs
    stranger: StaticSite  # an origin the API does not list

    def mint(self, **narrowing: Any) -> dict[str, Any]:
        response = self.client_request("POST", "/v1/upload-tokens", json=narrowing)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def client_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.front.url + path, headers=self.client.headers, timeout=30, **kwargs)

    def read_as(self, token: str, path: str) -> httpx.Response:
        return httpx.get(self.front.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def browser_stack(
    redis_service: RedisService, s3_service: S3Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserStack]:
    """An API (small body cap, CORS for the demo page's and the test pages' origins) behind
    nginx, one real worker process, the demo page's server, and two static sites. On its own
    SQLite file: what a browser sees doesn't depend on the database, so these run once."""
    workdir = tmp_path_factory.mktemp("browser")
    demo_port, pages_port, stranger_port = free_port(), free_port(), free_port()
    pages_dir, stranger_dir = workdir / "pages", workdir / "stranger"
    pages_dir.mkdir()
    stranger_dir.mkdir()
    for site in (pages_dir, stranger_dir):
        (site / "blank.html").write_text("<!doctype html><meta charset=utf-8><title>blank</title><div id=uploader></div>")
    settings = make_settings(
        workdir, f"sqlite:///{workdir / 'uploads.db'}", redis_service.url, s3_service,
        cors={"allow_origins": [*demo_origins(demo_port), f"http://127.0.0.1:{pages_port}"]},
        limits={"max_body_bytes": BODY_CAP, "max_image_bytes": BODY_CAP, "max_pdf_bytes": BODY_CAP},
        storage={"presign_ttl_seconds": 120},
    )
    settings.prepare_dirs()
    upgrade_to_head(settings.database)
    engine = build_engine(settings.database)
    store = build_object_store(settings.storage)
    store.allow_browser_gets(settings.cors.allow_origins)  # type: ignore[attr-defined]  # as the dev stack does
    redis_service.ensure_running()
    redis_service.flush()  # no jobs of other tests for this module's worker
    started: list[ManagedProcess] = []
    sites: list[StaticSite] = []
    api_process, api_url = start_api(settings, workdir)
    started.append(api_process)
    try:
        server = LiveServer(
            url=api_url, settings=settings, process=api_process, sessions=build_sessionmaker(engine), store=store,
            log_path=api_process.log_path,
        )
        front = start_front(server, workdir / "nginx")
        started.append(front.process)
        started.append(start_worker_process(server, workdir))
        client = server.client("upload,read")
        key_file = workdir / "demo-key"
        key_file.write_text(client.key + "\n")
        key_file.chmod(0o600)
        demo = demo_process(workdir, port=demo_port, api_url=front.url, key_file=key_file)
        started.append(demo)
        demo.start(timeout=15)
        sites.append(StaticSite(pages_dir, pages_port))
        sites.append(StaticSite(stranger_dir, stranger_port))
        yield BrowserStack(
            server=server, front=front, client=client, demo_url=f"http://127.0.0.1:{demo_port}/",
            pages=sites[0], stranger=sites[1],
        )
    finally:
        for site in sites:
            site.close()
        for process in reversed(started):
            process.stop(timeout=15)
        engine.dispose()
        redis_service.flush()


# --- helpers run in the page ---------------------------------------------------------------------

#: XHR a multipart upload of ``bytes`` (base64) from the page; resolve with what the page can read.
XHR_UPLOAD = """
const [url, token, name, type, b64, size, done] = arguments;
const bytes = b64 ? Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)) : new Uint8Array(size);
const form = new FormData();
form.append('file', new Blob([bytes], { type }), name);
const xhr = new XMLHttpRequest();
xhr.open('POST', url);
xhr.setRequestHeader('Authorization', 'Bearer ' + token);
xhr.onload = () => done({ status: xhr.status, text: xhr.responseText,
  requestId: xhr.getResponseHeader('X-Request-ID'), contentType: xhr.getResponseHeader('Content-Type') });
xhr.onerror = () => done({ status: xhr.status, error: 'network error', text: xhr.responseText,
  requestId: xhr.getResponseHeader('X-Request-ID') });
xhr.send(form);
"""


def upload_from_page(driver: Any, api: str, token: str, name: str, media_type: str, content: bytes | None, size: int = 0) -> dict[str, Any]:
    b64 = base64.b64encode(content).decode() if content is not None else ""
    return driver.execute_async_script(XHR_UPLOAD, f"{api}/v1/uploads", token, name, media_type, b64, size)  # type: ignore[no-any-return]


def wait_for(driver: Any, condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; page text:\n{driver.find_element('tag name', 'body').text}")
        time.sleep(0.1)


def cards(driver: Any) -> list[dict[str, Any]]:
    """The demo page's upload cards, as the page shows them (newest first)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """return Array.from(document.querySelectorAll('li.upload')).map((li) => {
             const img = li.querySelector('img.thumb');
             const text = (s) => li.querySelector(s).textContent;
             return { state: li.dataset.state, id: li.dataset.uploadId || null,
                      progressEvents: Number(li.dataset.progressEvents), progress: li.querySelector('.progress').value,
                      name: text('.name'), status: text('.status'),
                      errorShown: !li.querySelector('.error').hidden, code: text('.code'), message: text('.message'),
                      httpStatus: text('.http-status'), requestId: text('.request-id'),
                      thumbLoaded: !img.hidden && img.complete, naturalWidth: img.naturalWidth,
                      naturalHeight: img.naturalHeight, thumbSrc: img.currentSrc };
           });"""
    )


def pick(driver: Any, path: Path) -> None:
    driver.find_element("id", "file").send_keys(str(path))


def settled(driver: Any, count: int) -> list[dict[str, Any]] | None:
    """The cards once ``count`` of them reached a final state (done, failed, refused)."""
    shown = cards(driver)
    final = [c for c in shown if c["state"] in ("done", "failed", "refused")]
    return shown if len(shown) == count and len(final) == count else None


# --- the demo page -------------------------------------------------------------------------------


def test_demo_page_uploads_a_jpeg_and_a_pdf_and_shows_their_thumbnails(
    chromium: Any, browser_stack: BrowserStack, tmp_path: Path
) -> None:
    stack = browser_stack
    jpeg = tmp_path / "lake.jpg"
    jpeg.write_bytes(samples.noisy_jpeg_bytes(900, 700))  # about 1 MB
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(samples.pdf_bytes(pages=2))

    chromium.get(stack.demo_url)
    wait_for(chromium, lambda: chromium.find_element("id", "session").get_attribute("data-state") != "loading", 15, "a token")
    assert chromium.find_element("id", "session").get_attribute("data-state") == "ready", chromium.page_source
    assert chromium.find_element("id", "api").text == stack.front.url
    accept = chromium.find_element("id", "file").get_attribute("accept")
    assert "image/jpeg" in accept and "application/pdf" in accept and ".jpg" in accept  # from /v1/limits
    chromium.find_element("id", "caption").send_keys("At the lake")

    pick(chromium, jpeg)
    wait_for(chromium, lambda: settled(chromium, 1), 60, "the JPEG to be done")
    pick(chromium, pdf)
    shown = wait_for(chromium, lambda: settled(chromium, 2), 60, "the PDF to be done")

    for card, name in zip(shown, ("report.pdf", "lake.jpg"), strict=True):  # newest first
        assert card["state"] == "done", card
        assert card["name"].startswith(name)
        assert card["progressEvents"] >= 1 and card["progress"] == 100, card
        assert not card["errorShown"], card
        assert card["thumbLoaded"] and card["naturalWidth"] > 0, card
        assert max(card["naturalWidth"], card["naturalHeight"]) <= 256, card  # the 256 px thumbnail
        assert card["thumbSrc"].startswith(stack.server.settings.storage.endpoint_url), card  # presigned, on S3
        record = stack.client_request("GET", f"/v1/uploads/{card['id']}").json()
        assert record["status"] == "done" and record["filename"] == name
        assert record["metadata"] == {"caption": "At the lake", "source": "demo-page"}, record
    assert stack.client.key not in chromium.page_source  # the page never holds the API key
    for path in ("", "demo.js"):
        assert stack.client.key not in httpx.get(stack.demo_url + path, timeout=10).text

    shot = tmp_path / "demo-page.png"
    chromium.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    # The artifacts bucket's CORS lets an allowed page fetch() the bytes too (canvas, blobs);
    # the demo page itself only shows them (its CSP allows fetch() to the API alone).
    fetch_bytes = """const [url, done] = arguments;
        fetch(url).then(async (r) => done({ status: r.status, head: Array.from(new Uint8Array(await r.arrayBuffer()).slice(8, 12)) }))
                  .catch((e) => done({ error: e.name }));"""
    chromium.get(stack.pages.url("blank.html"))
    assert chromium.execute_async_script(fetch_bytes, shown[0]["thumbSrc"]) == {"status": 200, "head": list(b"WEBP")}
    chromium.get(stack.stranger.url("blank.html"))
    assert chromium.execute_async_script(fetch_bytes, shown[0]["thumbSrc"]) == {"error": "TypeError"}


def test_demo_page_shows_the_error_of_a_refusal(chromium: Any, browser_stack: BrowserStack, tmp_path: Path) -> None:
    """The app's 415 and nginx's own 413 both reach the page as JSON with their request ids."""
    stack = browser_stack
    svg = tmp_path / "drawing.svg"
    svg.write_bytes(samples.svg_bytes())
    big = tmp_path / "huge.jpg"
    big.write_bytes(samples.jpeg_bytes() + bytes(BODY_CAP + 512 * 1024))  # over nginx's cap

    chromium.get(stack.demo_url)
    wait_for(chromium, lambda: chromium.find_element("id", "session").get_attribute("data-state") == "ready", 15, "a token")
    pick(chromium, svg)
    wait_for(chromium, lambda: settled(chromium, 1), 30, "the SVG's refusal")
    pick(chromium, big)
    too_large, unsupported = wait_for(chromium, lambda: settled(chromium, 2), 30, "the large file's refusal")

    assert unsupported["state"] == "refused" and unsupported["errorShown"], unsupported
    assert (unsupported["httpStatus"], unsupported["code"]) == ("415", "UNSUPPORTED_MEDIA_TYPE"), unsupported
    assert too_large["state"] == "refused" and too_large["errorShown"], too_large
    assert (too_large["httpStatus"], too_large["code"]) == ("413", "FILE_TOO_LARGE"), too_large
    for card in (unsupported, too_large):
        assert card["message"] and re.fullmatch(REQUEST_ID, card["requestId"]), card
    nginx_line = stack.front.access_entry(too_large["requestId"])
    assert nginx_line["status"] == 413 and nginx_line["upstream_addr"] == "", nginx_line  # nginx answered itself
    assert stack.front.access_entry(unsupported["requestId"])["upstream_status"] == "415"  # the app did


# --- any page: JSON errors and X-Request-ID are readable ----------------------------------------------


def test_a_page_reads_the_json_and_request_id_of_the_apps_415_and_nginxs_413(
    chromium: Any, browser_stack: BrowserStack
) -> None:
    stack = browser_stack
    token = stack.mint(max_uploads=5)["token"]
    chromium.get(stack.pages.url("blank.html"))

    unsupported = upload_from_page(chromium, stack.front.url, token, "page.html", "text/html", samples.html_bytes())
    too_large = upload_from_page(chromium, stack.front.url, token, "big.png", "image/png", None, size=BODY_CAP + MiB)

    for answer, status, code in ((unsupported, 415, "UNSUPPORTED_MEDIA_TYPE"), (too_large, 413, "FILE_TOO_LARGE")):
        assert answer["status"] == status, answer  # not 0: no opaque network error
        assert answer["contentType"].startswith("application/json"), answer
        error = json.loads(answer["text"])["error"]
        assert error["code"] == code and error["message"], error
        assert answer["requestId"] and error["request_id"] == answer["requestId"], answer  # the header is exposed
    assert stack.front.access_entry(too_large["requestId"])["upstream_addr"] == ""  # nginx's own 413
    assert stack.front.access_entry(unsupported["requestId"])["upstream_status"] == "415"  # the app's 415


def test_a_page_on_an_origin_not_allowed_gets_nothing_it_can_read(chromium: Any, browser_stack: BrowserStack) -> None:
    stack = browser_stack
    token = stack.mint(max_uploads=5)["token"]
    probe = """
        const [api, token, done] = arguments;
        const outcome = (p) => p.then((r) => ({ status: r.status, type: r.type, readable: true }),
                                      (e) => ({ error: e.name }));
        Promise.all([
          outcome(fetch(api + '/v1/limits', { headers: { Authorization: 'Bearer ' + token } })),  // preflighted
          outcome(fetch(api + '/livez')),                                                      // simple request
          outcome(fetch(api + '/livez', { mode: 'no-cors' })),                                 // opaque at best
        ]).then(done);
    """
    jpeg = samples.jpeg_bytes()

    uploads_before = stack.client.upload_count()

    chromium.get(stack.stranger.url("blank.html"))
    limits, livez, opaque = chromium.execute_async_script(probe, stack.front.url, token)
    upload = upload_from_page(chromium, stack.front.url, token, "a.jpg", "image/jpeg", jpeg)
    assert limits == {"error": "TypeError"}, limits
    assert livez == {"error": "TypeError"}, livez
    assert opaque == {"status": 0, "type": "opaque", "readable": True}, opaque  # no status, headers or body
    assert upload["status"] == 0 and upload["text"] == "" and upload["requestId"] is None, upload
    assert stack.client.upload_count() == uploads_before  # the preflight failed: the POST was never sent

    # The same calls from an allowed origin work: the refusal above is the origin's, nothing else.
    chromium.get(stack.pages.url("blank.html"))
    limits, livez, _ = chromium.execute_async_script(probe, stack.front.url, token)
    assert limits == {"status": 200, "type": "cors", "readable": True}, limits
    assert livez == {"status": 200, "type": "cors", "readable": True}, livez
    allowed = upload_from_page(chromium, stack.front.url, token, "a.jpg", "image/jpeg", jpeg)
    assert allowed["status"] == 202, allowed


# --- Uppy -------------------------------------------------------------------------------------------


UPPY_RUN = """
const [api, token, jpegB64, done] = arguments;
(async () => {
  const limits = await (await fetch(api + '/v1/limits', { headers: { Authorization: 'Bearer ' + token } })).json();
  const uppy = new Uppy.Uppy({ restrictions: limits.uppy, meta: { album: 'trip' } })
    .use(Uppy.Dashboard, { inline: true, target: '#uploader' })
    .use(Uppy.XHRUpload, {
      endpoint: api + '/v1/uploads', fieldName: 'file', formData: true, bundle: false, limit: 2,
      headers: { Authorization: 'Bearer ' + token }, allowedMetaFields: ['album', 'caption'],
    });
  const refusals = {};
  const tryAdd = (label, file) => { try { uppy.addFile(file); return null; } catch (e) { refusals[label] = e.message; } };
  tryAdd('pdf', { name: 'doc.pdf', type: 'application/pdf', data: new Blob(['%PDF-1.7'], { type: 'application/pdf' }) });
  tryAdd('big', { name: 'big.jpg', type: 'image/jpeg', data: new Blob([new Uint8Array(limits.uppy.maxFileSize + 1)], { type: 'image/jpeg' }) });
  const progress = [];
  uppy.on('upload-progress', (file, p) => progress.push(p.bytesUploaded));
  const jpeg = Uint8Array.from(atob(jpegB64), (c) => c.charCodeAt(0));
  uppy.addFile({ name: 'lake.jpg', type: 'image/jpeg', data: new Blob([jpeg], { type: 'image/jpeg' }), meta: { caption: 'At the lake' } });
  const result = await uppy.upload();
  done({
    limits: limits.uppy, restrictions: uppy.opts.restrictions, refusals, progress,
    successful: result.successful.map((f) => ({ status: f.response.status, body: f.response.body })),
    failed: result.failed.map((f) => String(f.error)),
    dashboard: !!document.querySelector('.uppy-Dashboard'),
  });
})().catch((e) => done({ error: String(e && e.stack || e) }));
"""


def test_uppy_xhrupload_sends_meta_fields_as_metadata_with_restrictions_from_limits(
    chromium: Any, browser_stack: BrowserStack, uppy_dist: Path
) -> None:
    stack = browser_stack
    site = stack.pages.root
    for name in ("uppy.min.js", "uppy.min.css"):
        (site / name).write_bytes((uppy_dist / name).read_bytes())
    (site / "uppy.html").write_text(
        "<!doctype html><meta charset=utf-8><title>Uppy</title>"
        '<link rel="stylesheet" href="uppy.min.css"><script src="uppy.min.js"></script><div id="uploader"></div>'
    )
    minted = stack.mint(allowed_types=["image/jpeg", "image/png"], max_bytes=MiB, max_uploads=2)
    jpeg = samples.jpeg_bytes(320, 240)

    chromium.get(stack.pages.url("uppy.html"))
    assert chromium.execute_script("return typeof Uppy.XHRUpload") == "function"
    outcome = chromium.execute_async_script(UPPY_RUN, stack.front.url, minted["token"], base64.b64encode(jpeg).decode())
    assert "error" not in outcome, outcome

    # Restrictions are /v1/limits' `uppy` object, narrowed by this token, and Uppy enforces them.
    assert outcome["limits"]["maxFileSize"] == MiB and outcome["limits"]["maxNumberOfFiles"] == 2
    assert set(outcome["limits"]["allowedFileTypes"]) >= {"image/jpeg", "image/png", ".jpg"}
    assert "application/pdf" not in outcome["limits"]["allowedFileTypes"]
    for name in ("maxFileSize", "maxNumberOfFiles", "allowedFileTypes"):
        assert outcome["restrictions"][name] == outcome["limits"][name]
    assert set(outcome["refusals"]) == {"pdf", "big"}, outcome["refusals"]  # refused before a byte is sent
    assert outcome["dashboard"]

    assert outcome["failed"] == [], outcome
    (success,) = outcome["successful"]
    assert success["status"] == 202 and outcome["progress"], outcome
    record = stack.read_as(minted["token"], f"/v1/uploads/{success['body']['id']}").json()
    assert record["filename"] == "lake.jpg" and record["size"] == len(jpeg)
    assert record["metadata"] == {"album": "trip", "caption": "At the lake"}, record
