"""The event journal (agent/mqtt/journal.py) that makes publish_event durable, without a broker:
recovery after an unclean stop exactly once, torn tails, plain types, disk errors, clean-up."""

from __future__ import annotations

import dataclasses
import errno
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.emit import synthetic_event
from agent.mqtt import journal as journal_mod
from agent.mqtt.journal import decode_event, event_record
from agent.mqtt.outbox import Outbox, OutMessage


def _segments(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir() if ".accepted." in p.name)


def _frames(state: Path) -> list[int]:
    import json
    import sqlite3

    with sqlite3.connect(state / "mqtt-outbox.sqlite3") as db:
        return [json.loads(p)["frame"] for (p,) in db.execute("SELECT payload FROM outbox WHERE topic LIKE '%/events'"
                                                              " ORDER BY id")]


def test_events_accepted_before_an_unclean_stop_are_recovered_once(make_publisher, tmp_path: Path, caplog) -> None:
    state = tmp_path / "state"
    crashed = make_publisher("127.0.0.1", 1, device_id="j1", start=False, state_dir=state)
    for i in range(5):
        crashed.publish_event(synthetic_event(i))
    assert crashed.outbox_depth == 5 and _frames(state) == []  # in memory and in the journal, not in SQLite
    # The process dies here: no close(), nothing ingested. The next start puts them in the outbox, in order.
    caplog.set_level(logging.WARNING, logger="agent.mqtt")
    again = make_publisher("127.0.0.1", 1, device_id="j1", start=False, state_dir=state)
    assert _frames(state) == [0, 1, 2, 3, 4]
    assert "recovered 5 event(s) accepted before the last stop" in caplog.text
    seqs_before = again._outbox.next_seq
    third = make_publisher("127.0.0.1", 1, device_id="j1", start=False, state_dir=state)  # killed again at once
    assert _frames(state) == [0, 1, 2, 3, 4] and third._outbox.next_seq == seqs_before  # not twice


def test_a_clean_close_leaves_no_journal_and_nothing_to_recover(make_publisher, tmp_path: Path, caplog) -> None:
    state = tmp_path / "state"
    pub = make_publisher("127.0.0.1", 1, device_id="j2", start=False, state_dir=state)
    for i in range(3):
        pub.publish_event(synthetic_event(i))
    assert len(_segments(state)) == 2  # the current segment and a spare
    pub.close(timeout=0.1)
    assert _segments(state) == [] and _frames(state) == [0, 1, 2]
    caplog.set_level(logging.WARNING, logger="agent.mqtt")
    make_publisher("127.0.0.1", 1, device_id="j2", start=False, state_dir=state)
    assert _frames(state) == [0, 1, 2] and "recovered" not in caplog.text


def test_a_torn_last_record_is_ignored_and_the_ones_before_it_kept(make_publisher, tmp_path: Path, caplog) -> None:
    state = tmp_path / "state"
    crashed = make_publisher("127.0.0.1", 1, device_id="j3", start=False, state_dir=state)
    for i in range(4):
        crashed.publish_event(synthetic_event(i))
    seg = state / _segments(state)[0]
    data = bytearray(seg.read_bytes())
    end = crashed._journal.size
    data[end - 7:end] = bytes(7)  # a power cut: the last record's header reached the disk, its end did not
    seg.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="agent.mqtt")
    make_publisher("127.0.0.1", 1, device_id="j3", start=False, state_dir=state)
    assert _frames(state) == [0, 1, 2]
    assert "ends in a torn record" in caplog.text and "recovered 3 event(s)" in caplog.text


def test_numpy_numbers_are_journaled_as_plain_numbers() -> None:
    e = synthetic_event(7)
    face = dataclasses.replace(e.face, confidence=np.float32(0.7), face_id=np.int64(3),
                               box=tuple(np.float64(v) for v in e.face.box),
                               probabilities={k: np.float32(v) for k, v in e.face.probabilities.items()})
    back = decode_event(event_record(dataclasses.replace(e, face=face, frame_number=np.int64(7))))
    assert type(back.face.confidence) is float and back.face.confidence == pytest.approx(0.7)
    assert back.face.face_id == 3 and back.frame_number == 7 and back.type == e.type
    assert back.face.box == pytest.approx(e.face.box) and back.face.probabilities == pytest.approx(e.face.probabilities)
    assert len(event_record(e)) == 124  # the usual event: one struct pack
    with pytest.raises((TypeError, ValueError)):
        event_record(dataclasses.replace(e, face=dataclasses.replace(e.face, confidence="high")))


def test_an_unusual_event_round_trips_through_the_general_form() -> None:
    e = synthetic_event(9)
    odd = dataclasses.replace(e, type="blinked", face=dataclasses.replace(
        e.face, label="smirk", probabilities={"smirk": np.float32(0.9), "other": 0.1}, box=[np.float64(0.5)] * 4))
    record = event_record(odd)
    assert record[0] == 2  # marshal of plain fields
    back = decode_event(record)
    assert back.type == "blinked" and back.face.label == "smirk" and back.face.box == (0.5,) * 4
    assert back.face.probabilities == pytest.approx({"smirk": 0.9, "other": 0.1})
    assert all(type(v) is float for v in back.face.probabilities.values())
    with pytest.raises(ValueError, match="unknown kind"):
        decode_event(b"\x07junk")


def test_no_room_in_the_journal_is_one_line_and_the_events_still_reach_the_outbox(make_publisher, tmp_path: Path,
                                                                                 monkeypatch, caplog) -> None:
    state = tmp_path / "state"
    pub = make_publisher("127.0.0.1", 1, device_id="j4", start=False, state_dir=state)
    journal = pub._journal
    journal.capacity = 400  # room for three records (132 bytes each), and the disk is full

    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "posix_fallocate", disk_full)
    caplog.set_level(logging.ERROR, logger="agent.mqtt")
    for i in range(4):
        pub.publish_event(synthetic_event(i))  # the 4th does not fit: the frame loop moves to the spare
    assert journal.segment == 2 and not journal.full
    pub._ingest(final=True)  # the outbox thread's turn: it cannot make a new spare (ENOSPC) and says so
    for i in range(4, 8):
        pub.publish_event(synthetic_event(i))  # the spare runs full too; never raises into the frame loop
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1, errors  # one line a minute, not one per event
    assert "has no room (cannot make a journal file: No space left on device (ENOSPC))" in errors[0]
    assert caplog.records[0].exc_info is None  # one line, no traceback
    assert journal.failures > 0 and journal.full
    monkeypatch.undo()  # space again
    pub._ingest(final=True)
    assert _frames(state) == list(range(8)) and pub.dropped == 0
    assert not journal.full
    pub.publish_event(synthetic_event(8))
    assert journal.size > 0  # journaling again
    assert pub._queue[-1][2] is not None


def test_a_full_disk_at_start_does_not_stop_the_publisher(make_publisher, tmp_path: Path, monkeypatch, caplog) -> None:
    def read_only(*args: object) -> int:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(journal_mod.os, "open", read_only)
    caplog.set_level(logging.ERROR, logger="agent.mqtt")
    pub = make_publisher("127.0.0.1", 1, device_id="j6", start=False, state_dir=tmp_path / "state")
    pub.publish_event(synthetic_event(0))
    assert "cannot make a journal file: Read-only file system" in caplog.text
    assert pub.outbox_depth == 1


def test_the_journal_rotates_and_drops_segments_the_outbox_holds(make_publisher, tmp_path: Path, monkeypatch) -> None:
    state = tmp_path / "state"
    pub = make_publisher("127.0.0.1", 1, device_id="j5", start=False, state_dir=state)
    pub._journal.rotate_bytes = 1000  # a few records per segment before the outbox thread moves on
    for i in range(40):
        pub.publish_event(synthetic_event(i))
        if i % 5 == 4:
            pub._ingest(final=True)
    assert pub._journal.segment > 3
    assert len(_segments(state)) <= 3  # the spare, the current one and at most one the outbox mark points into
    assert _frames(state) == list(range(40))


def test_outbox_stores_the_journal_mark_with_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    box = Outbox(path, max_messages=100, max_bytes=1 << 20, max_age_s=3600)
    assert box.journal_mark == (0, 0)
    box.append([OutMessage("t", b"x", 1, False)], unsent_after=0, journal_mark=(3, 120))
    box.append([], unsent_after=0, journal_mark=(4, 0))  # a mark alone (a journal record that was not usable)
    box.close()
    again = Outbox(path, max_messages=100, max_bytes=1 << 20, max_age_s=3600)
    assert again.journal_mark == (4, 0) and again.depth == 1


def test_a_truncated_journal_segment_is_reported_with_what_was_recovered(make_publisher, tmp_path: Path,
                                                                         caplog) -> None:
    state = tmp_path / "state"
    crashed = make_publisher("127.0.0.1", 1, device_id="j6", start=False, state_dir=state)
    for i in range(5):
        crashed.publish_event(synthetic_event(i))
    seg = state / _segments(state)[0]
    record = crashed._journal.size // 5
    seg.write_bytes(seg.read_bytes()[:3 * record])  # cut at a record boundary: no torn record to notice
    caplog.set_level(logging.WARNING, logger="agent.mqtt")
    make_publisher("127.0.0.1", 1, device_id="j6", start=False, state_dir=state)
    assert _frames(state) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records if "damage found at start" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "recovered 3 event(s)" in lines[0] and f"{seg.name} truncated at byte {3 * record}" in lines[0]


def test_an_overwritten_outbox_wal_is_reported_kept_aside_and_the_journal_refills_the_queue(
        make_publisher, tmp_path: Path, caplog) -> None:
    import os
    import shutil

    state = tmp_path / "state"
    crashed = make_publisher("127.0.0.1", 1, device_id="j7", start=False, state_dir=state)
    for i in range(5):
        crashed.publish_event(synthetic_event(i))
    crashed._ingest(final=True)  # the rows and the journal mark are committed to the WAL
    copy = tmp_path / "copy"  # the files as a kill -9 leaves them (closing here would checkpoint the WAL)
    shutil.copytree(state, copy)
    wal = copy / "mqtt-outbox.sqlite3-wal"
    assert wal.stat().st_size > 0
    wal.write_bytes(os.urandom(wal.stat().st_size))  # overwritten (a bad SD card, a stray dd)
    caplog.set_level(logging.WARNING, logger="agent.mqtt")
    make_publisher("127.0.0.1", 1, device_id="j7", start=False, state_dir=copy)
    assert _frames(copy) == [0, 1, 2, 3, 4]  # the journal still had them
    lines = [r.getMessage() for r in caplog.records if "damage found at start" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "recovered 5 event(s)" in lines[0] and "write-ahead log mqtt-outbox.sqlite3-wal" in lines[0]
    assert list(copy.glob("mqtt-outbox.sqlite3-wal.damaged-*")), "kept for inspection"
