"""JSON from clients, with its nesting bounded before any recursive parser sees it.

Python's ``json`` decoder (and the encoder that later writes the value to the DB) recurse once per
level: ``[`` × 5000 raises ``RecursionError`` deep inside them, and a few hundred levels already
cost a stack frame each in every later walk. ``check_json_depth`` scans the raw bytes once —
strings skipped, brackets counted, no recursion — and refuses a document nested deeper than the
bound before ``json.loads`` runs. Pure: bytes in, ``ServiceError`` out.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from upload_service.errors import ErrorCode, ServiceError

#: An escape sequence (an escaped quote must not end a string, an escaped backslash must not escape one).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
#: A string once escapes are gone. An unterminated one can only be the last quote, so the
#: scan stays linear (each failed attempt would otherwise restart at the next quote).
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: +1 for an opening bracket, -1 for a closing one, indexed by byte value.
_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (0 for a scalar).

    Linear in ``len(raw)`` and run in C (regex, translate, accumulate): no recursion, no Python
    loop per byte. Brackets inside strings don't count. The bytes need not be valid JSON: a
    decoder reads left to right and fails at the first unbalanced bracket or unterminated
    string, so it never nests deeper than the running count of the prefix it accepted.
    """
    unescaped = _ESCAPE.sub(b"", raw)
    bare = _STRING.sub(b"", unescaped)
    brackets = bare.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets))))


def check_json_depth(raw: bytes, max_depth: int, field: str) -> None:
    """422 VALIDATION_FAILED when ``raw`` nests deeper than ``max_depth``."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return  # too few brackets to nest that deep: no scan needed (the common case)
    if json_depth(raw) > max_depth:
        raise too_deep(max_depth, field=field)


def too_deep(max_depth: int, *, field: str) -> ServiceError:
    return ServiceError(
        ErrorCode.VALIDATION_FAILED,
        f"{field} is nested too deeply",
        details=[{"loc": ["body", field], "msg": f"JSON nested deeper than {max_depth} levels", "type": "json_depth"}],
    )


def load_json(raw: bytes, max_depth: int, *, field: str) -> Any:
    """``json.loads`` of UTF-8 bytes whose depth was checked first; 422 on anything invalid."""
    check_json_depth(raw, max_depth, field)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"{field} must be valid JSON",
            details=[{"loc": ["body", field], "msg": f"invalid JSON: {type(exc).__name__}", "type": "json_invalid"}],
        ) from None
