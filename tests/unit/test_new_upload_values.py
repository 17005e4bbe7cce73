"""A just-accepted upload's record (``NewUploadValues``) carries every column of ``Upload``
under the same attribute name: the group commit inserts it column by column
(``repository.upload_row``), so a column added to the table and not to the record would fail
every accept, and the record's defaults are the table's for a new upload."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from sqlalchemy import inspect

from upload_service.db.models import NewUploadValues, Upload, UploadStatus
from upload_service.db.repository import upload_row


def test_the_record_has_every_column_of_the_table() -> None:
    columns = {prop.key for prop in inspect(Upload).column_attrs}
    fields = {field.name for field in dataclasses.fields(NewUploadValues)}
    assert columns <= fields
    assert fields - columns == {"artifacts"}  # (the relationship the 202 shows, empty)


def test_its_row_is_the_tables_column_names_with_a_new_uploads_defaults() -> None:
    now = datetime.now(timezone.utc)
    record = NewUploadValues(
        id="u1", tenant="acme", filename="a.png", size=3, sha256="0" * 64, declared_type="image/png",
        detected_type="image/png", status=UploadStatus.QUEUED, metadata_={"k": "v"}, tags=None,
        original_key="acme/u1/original", idempotency_key=None, request_id="r", key_id="k1", token_id=None,
        created_at=now, updated_at=now,
    )
    row = upload_row(record)
    assert set(row) == {column.name for column in Upload.__table__.columns}
    assert row["metadata"] == {"k": "v"}  # the column's name, from the ``metadata_`` attribute
    assert (row["error_code"], row["error_message"], row["attempts"]) == (None, None, 0)
