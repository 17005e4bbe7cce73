"""docs/errors.md is generated from the error table, and the table documents every code: an
HTTP code added to ``ErrorCode`` or a processing code raised by a worker without its "when" and
"what to do" text fails here, and so does a stale docs/errors.md."""

from __future__ import annotations

import re
from pathlib import Path

from upload_service.errors import PROCESSING_CODES, ErrorCode, render_error_docs

ROOT = Path(__file__).resolve().parents[2]
_PROCESSING_CODE = re.compile(r'"((?:IMAGE|PDF|PROCESSING)_[A-Z_]+)"')


def test_every_http_code_is_documented() -> None:
    for code in ErrorCode:
        doc = code.doc  # KeyError: a code without docs
        assert len(doc.when) > 20 and len(doc.client_action) > 10, code
        assert "|" not in doc.when + doc.client_action, f"{code}: '|' breaks the Markdown table"
        assert code.statuses[0] == code.status


def test_every_processing_code_the_workers_raise_is_documented() -> None:
    raised = set()
    for path in (ROOT / "workers").rglob("*.py"):
        raised |= set(_PROCESSING_CODE.findall(path.read_text()))
    assert raised, "no processing codes found in workers/: has the way they are raised changed?"
    assert sorted(raised - set(PROCESSING_CODES)) == [], "document these in upload_service/errors.py"
    assert sorted(set(PROCESSING_CODES) - raised) == [], "documented but never raised (stale docs)"
    for name, doc in PROCESSING_CODES.items():
        assert doc.when and doc.client_action and "|" not in doc.when + doc.client_action, name


def test_docs_errors_md_is_fresh() -> None:
    committed = (ROOT / "docs" / "errors.md").read_text()
    assert committed == render_error_docs(), (
        "docs/errors.md is stale: regenerate with `python -m upload_service.errors > docs/errors.md`"
    )
    for code in ErrorCode:
        assert f"| `{code.value}` |" in committed
