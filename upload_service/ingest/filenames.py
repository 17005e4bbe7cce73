"""The client's filename, made safe to keep as display metadata. It is never used as a path."""

from __future__ import annotations

import unicodedata

#: Unicode bidirectional controls that can disguise an extension ("invoice\u202efdp.exe").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def sanitize_filename(name: str | None, *, max_chars: int = 255) -> str | None:
    """Return a display-safe filename, or ``None`` when nothing usable is left.

    Keeps only the last path component (browsers on Windows send ``C:\\x\\y.png``), drops
    control, format (bidi) and separator characters, NUL, CR and LF, trims dots and spaces at
    the ends, and cuts to ``max_chars`` while keeping the extension.
    """
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(ch for ch in name if _is_safe_char(ch))
    kept = kept.strip(" .")
    if not kept or kept in {".", ".."}:
        return None
    if len(kept) > max_chars:
        stem, dot, extension = kept.rpartition(".")
        if dot and 0 < len(extension) <= 16 and stem:
            kept = stem[: max_chars - len(extension) - 1] + "." + extension
        else:
            kept = kept[:max_chars]
    return kept


def _is_safe_char(ch: str) -> bool:
    if ch in _BIDI or ch in "/\\":
        return False
    category = unicodedata.category(ch)
    # Cc control (NUL, CR, LF...), Cf format (bidi, zero-width), Cs surrogates, Co private,
    # Zl/Zp line and paragraph separators.
    return category not in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
