"""The on-disk outbox: order, persistence across restarts, limits that drop the oldest, coalescing."""

from __future__ import annotations

import time
from pathlib import Path

from agent.mqtt.outbox import Outbox, OutMessage


def _open(path: Path, **kw) -> Outbox:
    return Outbox(path, **{"max_messages": 1000, "max_bytes": 10**6, "max_age_s": 3600.0, **kw})


def _msgs(n: int, start: int = 0, size: int = 10) -> list[OutMessage]:
    return [OutMessage("t/e", f"{start + i:0{size}d}".encode(), 1, False) for i in range(n)]


def test_rows_come_back_in_order_and_ack_removes_them(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.append(_msgs(5), unsent_after=0)
    rows = ob.after(0, 3)
    assert [int(r.payload) for r in rows] == [0, 1, 2]
    assert [int(r.payload) for r in ob.after(rows[-1].id, 10)] == [3, 4]
    ob.ack([rows[0].id, rows[2].id])
    assert ob.depth == 3 and [int(r.payload) for r in ob.after(0, 10)] == [1, 3, 4]
    assert ob.bytes == 30


def test_queue_and_sequence_survive_a_restart(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.append(_msgs(3), unsent_after=0, next_seq=4)
    ob.close()
    again = _open(tmp_path / "o.db")
    assert again.depth == 3 and again.next_seq == 4 and again.bytes == 30
    assert [int(r.payload) for r in again.after(0, 10)] == [0, 1, 2]


def test_count_limit_drops_oldest_and_counts(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db", max_messages=10)
    assert ob.append(_msgs(8), unsent_after=0) == 0
    assert ob.append(_msgs(5, start=8), unsent_after=0) == 3
    assert ob.depth == 10 and ob.dropped == 3
    assert [int(r.payload) for r in ob.after(0, 100)] == list(range(3, 13))


def test_byte_limit_drops_oldest(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db", max_bytes=1024)
    ob.append(_msgs(200, size=10), unsent_after=0)  # 2000 bytes
    assert ob.bytes <= 1024 and ob.dropped == 200 - ob.depth
    kept = [int(r.payload) for r in ob.after(0, 1000)]
    assert kept == list(range(200 - len(kept), 200))  # the newest survive, in order


def test_age_limit_expires_old_rows(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db", max_age_s=60)
    old = [OutMessage("t", b"old", 1, False, created=time.time() - 120)]
    ob.append(old + _msgs(2), unsent_after=0)
    assert ob.expire() == 1 and ob.depth == 2 and ob.dropped == 1
    assert ob.expire() == 0


def test_coalescing_replaces_only_unsent_state(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    s1 = OutMessage("t/state", b"s1", 1, True, coalesce="state")
    ob.append([s1, *_msgs(1)], unsent_after=0)
    first = ob.after(0, 1)[0]
    # s1 has been handed to the broker (sent up to its id): a newer state must not delete it
    ob.append([OutMessage("t/state", b"s2", 1, True, coalesce="state")], unsent_after=first.id)
    ob.append([OutMessage("t/state", b"s3", 1, True, coalesce="state")], unsent_after=first.id)
    assert [r.payload for r in ob.after(0, 10)] == [b"s1", b"0000000000", b"s3"]
    assert ob.depth == 3 and ob.dropped == 0  # a replaced state is not a lost one


def test_corrupt_queue_file_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database, it is a power cut on an SD card" * 100)
    ob = _open(path)
    assert ob.depth == 0
    ob.append(_msgs(1), unsent_after=0)
    assert ob.depth == 1
    assert len(list(tmp_path.glob("o.db.corrupt-*"))) == 1


def test_unusable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from agent.contracts.errors import FerError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FerError, match="cannot create state directory"):
        _open(blocker / "sub" / "o.db")
