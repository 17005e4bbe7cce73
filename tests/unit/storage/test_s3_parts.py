"""The parts of a streamed original after the first (which is ``part_bytes``, from memory),
without a server. Their plan: every part but the last at least S3's 5 MiB, the body's end on a
part boundary when its size is known (so no part is sent twice), and only the parts the body
may end in streamed; the others go out whole once full. A part: how long it waits for bytes."""

from __future__ import annotations

import ctypes
import threading

import pytest

from upload_service.settings import MiB
from upload_service.storage import s3_parts
from upload_service.storage.s3_direct import TruncatedBody
from upload_service.storage.s3_parts import HINT_SLACK, MIN_PART_BYTES, Part, PartPlan


def planned(plan: PartPlan, body: int) -> list[tuple[int, int, bool]]:
    """(start, declared size, streamed) of each part after the first, until they cover ``body``."""
    parts, start = [], plan.part_bytes
    while start < body:
        declared = plan.size_at(start)
        parts.append((start, declared, plan.streams(start, declared)))
        start += declared
    return parts


def held(plan: PartPlan, body: int) -> list[tuple[int, bool]]:
    """(bytes of the body, streamed) of each part: one cut short by the body's end counts what
    it holds."""
    return [(min(declared, body - start), streams) for start, declared, streams in planned(plan, body)]


@pytest.mark.parametrize(
    ("part_bytes", "body"),
    [
        (part_bytes, body)
        for part_bytes in (5 * MiB, 8 * MiB, 16 * MiB)
        for body in (8 * MiB + 1, 9 * MiB, 13 * MiB, 16 * MiB + 5, 21 * MiB, 45 * MiB + 123_457, 500 * MiB + 7)
        if body > part_bytes  # (else one PUT)
    ],
)
@pytest.mark.parametrize("extra", [0, 700, 200 * 1024])
def test_with_a_size_hint_the_parts_end_on_the_body_and_only_the_last_ones_stream(
    part_bytes: int, body: int, extra: int
) -> None:
    """The hint is the size (raw body) or an upper bound (a form's request length, ``extra``
    bytes more): the parts cover the body, every part but the last is >= 5 MiB, no part
    declared more than the body held (a part cut short would be sent again) but the one that
    runs to the bound, and only the last planned part and the small one after it stream."""
    hint = body + extra
    plan = PartPlan(part_bytes, hint)
    for start, declared, _ in planned(plan, body):
        assert declared <= body - start or start + declared >= hint - HINT_SLACK, (start, declared)
    parts = held(plan, body)
    assert part_bytes + sum(size for size, _ in parts) == body
    assert all(size >= MIN_PART_BYTES for size, _ in parts[:-1]), parts
    assert max(size for size, _ in parts) <= max(part_bytes, 2 * MIN_PART_BYTES)
    streamed = [i for i, (_, streams) in enumerate(parts) if streams]
    assert 1 <= len(streamed) <= 2 and streamed == list(range(len(parts) - len(streamed), len(parts))), parts


def test_without_a_hint_every_part_streams_and_is_as_small_as_s3_allows() -> None:
    """Any part may be the last, and the part the body ends in is sent twice: 5 MiB parts bound
    how much that is."""
    assert held(PartPlan(8 * MiB, None), 45 * MiB) == [(5 * MiB, True)] * 7 + [(2 * MiB, True)]
    assert held(PartPlan(5 * MiB, None), 45 * MiB) == [(5 * MiB, True)] * 8


def test_an_upper_bound_far_above_the_body_keeps_its_parts_plain() -> None:
    """A form's request length with a large field after the file: the body ends well before
    the parts that would stream."""
    assert not any(streams for _, _, streams in planned(PartPlan(8 * MiB, 200 * MiB), 60 * MiB))


def test_a_body_past_its_bound_goes_on_in_small_streamed_parts() -> None:
    plan = PartPlan(8 * MiB, 20 * MiB)
    assert plan.size_at(20 * MiB) == MIN_PART_BYTES and plan.streams(20 * MiB, MIN_PART_BYTES)


def test_a_part_that_gave_up_waiting_does_not_wait_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed part whose body stalled gives up once: the writer then asks for its bytes to
    send them whole, and gets the refusal at once, not after a second stall bound."""
    part = Part(2, MIN_PART_BYTES, threading.Condition(), lambda n: None, streamed=True)
    with part._changed:
        part.fill(memoryview(b"x" * 1000))
    monkeypatch.setattr(s3_parts, "STALL_SECONDS", 0.2)
    with pytest.raises(TruncatedBody):
        list(part.chunks())  # nothing more comes: gives up after 0.2 s
    assert part.aborted
    monkeypatch.setattr(s3_parts, "STALL_SECONDS", 3600.0)  # (the test's own timeout if it waited)
    with pytest.raises(TruncatedBody):
        part.whole()


def test_a_part_buffer_is_private_zeroed_memory() -> None:
    """A part's bytes live in a private anonymous mapping, not in shmem (``mmap``'s default
    shared mapping, which faulted page by page at ~0.9 ms/MiB)."""

    def mapping_of(address: int) -> str | None:
        with open("/proc/self/maps") as maps:
            for line in maps:
                span, perms = line.split()[:2]
                low, high = (int(edge, 16) for edge in span.split("-"))
                if low <= address < high:
                    return perms
        return None

    buffer = s3_parts.part_buffer(8 * MiB)
    first = ctypes.c_char.from_buffer(buffer)
    address = ctypes.addressof(first)
    del first  # (an exported pointer would keep the mapping from closing)
    assert mapping_of(address) == "rw-p"  # private ("rw-s" would be shared)
    assert buffer[: 4 * MiB].count(0) == 4 * MiB  # fresh, zeroed memory
    buffer[8 * MiB - 3 :] = b"end"
    assert buffer[8 * MiB - 3 :] == b"end"
    buffer.close()


def test_part_buffers_are_kept_for_later_parts_up_to_a_bound() -> None:
    """A released buffer serves the next part of a size it fits (no fresh pages to zero);
    parts of nearby sizes share whole huge pages; past ``keep`` idle buffers, one is unmapped."""
    pool = s3_parts.BufferPool(keep=2)
    changed = threading.Condition()

    def part(size: int) -> Part:
        return Part(2, size, changed, lambda n: None, streamed=False, buffers=pool)

    first = part(8 * MiB)
    buffer = first.buffer
    assert len(buffer) == 8 * MiB
    first.fill(memoryview(b"a" * 1000))
    first.release()
    first.release()  # (once only)
    assert pool.idle == 1
    second = part(5 * MiB + 1)
    assert second.buffer is buffer and pool.idle == 0  # the same mapping, used again
    second.fill(memoryview(b"b" * 10))
    with changed:
        second.ended = True
    assert bytes(second.whole()) == b"b" * 10  # what this part was filled with, nothing older
    odd = part(int(9.76 * MiB))
    assert len(odd.buffer) == 10 * MiB  # rounded up to whole 2 MiB pages
    spare = part(MIN_PART_BYTES)
    for each in (second, odd, spare):
        each.release()
    assert pool.idle == 2
    assert spare.buffer.closed and not buffer.closed and not odd.buffer.closed
    assert pool.take(9 * MiB) is odd.buffer  # the smallest that fits


def test_a_sender_is_woken_when_the_bytes_it_waits_for_are_in() -> None:
    """The filler notifies only when the sender's bytes are all in (``sender_may_go_on``): a
    plain part's sender waits for the whole part, not for each network chunk."""
    changed = threading.Condition()
    part = Part(2, MIN_PART_BYTES, changed, lambda n: None, streamed=False, buffers=s3_parts.BufferPool(keep=0))
    got: list[bytes] = []
    sender = threading.Thread(target=lambda: got.append(bytes(part.whole()[-3:])))
    sender.start()
    for _ in range(500):
        if part.awaited is not None:
            break
        threading.Event().wait(0.01)
    assert part.awaited == MIN_PART_BYTES
    with changed:
        part.fill(memoryview(b"x" * (MIN_PART_BYTES - 3)))
        assert not part.sender_may_go_on
        part.fill(memoryview(b"end"))
        assert part.sender_may_go_on
        changed.notify_all()
    sender.join(timeout=5)
    assert got == [b"end"] and part.awaited is None
