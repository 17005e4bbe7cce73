"""The ledger of originals stored before their rows: what a living process keeps, what a sweep
of a dead process's ledger removes, and what it leaves for the next start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from upload_service import pending
from upload_service.pending import PendingOriginals, sweep_dead_ledgers


def ledgers(directory: Path) -> list[Path]:
    return sorted(directory.glob("pending-originals-*.log"))


def dead_ledger(directory: Path, text: str) -> Path:
    """A ledger as a killed process leaves it: its lines, nobody holding its lock."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pending-originals-999999-0123456789ab.log"
    path.write_text(text)
    return path


def test_a_note_is_a_line_in_the_process_ledger_and_a_clean_exit_removes_it(tmp_path: Path) -> None:
    ledger = PendingOriginals(tmp_path)
    [path] = ledgers(tmp_path)
    assert str(os.getpid()) in path.name
    note = ledger.note("u1", "acme/u1/original")
    assert path.read_text() == "u1 acme/u1/original\n"
    note.done()
    note.done()  # idempotent
    ledger.close()
    assert ledgers(tmp_path) == []


def test_a_clean_exit_with_an_unfinished_upload_keeps_the_ledger_for_the_sweep(tmp_path: Path) -> None:
    ledger = PendingOriginals(tmp_path)
    ledger.note("u1", "acme/u1/original")
    ledger.close()
    assert [p.read_text() for p in ledgers(tmp_path)] == ["u1 acme/u1/original\n"]


def test_a_full_ledger_is_removed_once_its_uploads_have_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pending, "ROTATE_BYTES", 40)
    ledger = PendingOriginals(tmp_path)
    first = ledger.note("u1", "acme/u1/original")
    second = ledger.note("u2", "acme/u2/original")  # 40 bytes: the next note rotates
    third = ledger.note("u3", "acme/u3/original")
    assert len(ledgers(tmp_path)) == 2
    first.done()
    assert len(ledgers(tmp_path)) == 2  # u2 still open in the full ledger
    second.done()
    [current] = ledgers(tmp_path)
    assert current.read_text() == "u3 acme/u3/original\n"
    third.done()
    ledger.close()
    assert ledgers(tmp_path) == []


def test_the_sweep_deletes_the_unrecorded_originals_of_a_dead_ledger_and_then_the_ledger(tmp_path: Path) -> None:
    path = dead_ledger(tmp_path, "u1 acme/u1/original\nu2 acme/u2/original\nu3 acme/u3/orig")  # u3: cut short
    deleted: list[str] = []
    removed = sweep_dead_ledgers(tmp_path, lambda ids: {"u1"} & set(ids), deleted.append)
    assert removed == 1
    assert deleted == ["acme/u2/original"]  # u1 has its row; u3's line was never complete
    assert not path.exists()


def test_the_sweep_leaves_a_living_process_ledger_alone(tmp_path: Path) -> None:
    ledger = PendingOriginals(tmp_path)
    ledger.note("u1", "acme/u1/original")
    deleted: list[str] = []
    assert sweep_dead_ledgers(tmp_path, lambda ids: set(), deleted.append) == 0
    assert deleted == [] and len(ledgers(tmp_path)) == 1
    ledger.close()


def test_a_fault_during_the_sweep_keeps_the_ledger_for_the_next_start(tmp_path: Path) -> None:
    path = dead_ledger(tmp_path, "u1 acme/u1/original\n")

    def unreachable(_key: str) -> None:
        raise OSError("S3 is down")

    assert sweep_dead_ledgers(tmp_path, lambda ids: set(), unreachable) == 0
    assert path.exists()
    deleted: list[str] = []
    assert sweep_dead_ledgers(tmp_path, lambda ids: set(), deleted.append) == 1
    assert deleted == ["acme/u1/original"] and not path.exists()
