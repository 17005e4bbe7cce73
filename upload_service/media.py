"""Media kinds: which pipeline (and queue) processes a detected media type. Pure, a leaf."""

from __future__ import annotations

IMAGE = "image"
PDF = "pdf"


def kind_of(media_type: str) -> str:
    """``pdf`` for PDFs, ``image`` for the image types ingest accepts."""
    return PDF if media_type == "application/pdf" else IMAGE
