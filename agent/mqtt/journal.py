"""Append-only journal of accepted events: why an event handed to ``publish_event`` survives ``kill -9``.

Before ``publish_event`` returns, it copies one record into a memory-mapped
journal file (``MAP_SHARED``). The pages belong to the kernel's page cache, so
killing the process at any later moment loses nothing (a power cut can still
lose what the kernel has not written out yet, as with the outbox's
``synchronous=NORMAL``). The outbox thread moves events from memory into the
SQLite :class:`~agent.mqtt.outbox.Outbox` as before and stores, in the same
transaction, how far into the journal it got (``Outbox.journal_mark``). At the
next start, :meth:`Journal.records_after` that mark go into the outbox before
anything else, exactly once.

Why a memory map and not ``write()``: a ``write`` system call releases the GIL,
and getting it back can cost the frame loop the outbox or paho thread's whole
time slice. The copy holds the GIL and makes no system call
(``benchmarks/publish_event_cost.py`` measures each part).

Records are ``length (u32) | crc32 (u32) | body``; the body is one ``struct``
pack of the event's fields (or, for an unusual event, marshal of plain fields:
unlike pickle, neither runs code when read back). The body is copied before
the header, so a kill in the middle leaves a zero header, which reads as the
end of the segment; a header whose CRC does not match (a power cut) ends the
segment with a warning.

Segments are ``<outbox stem>.accepted.<n>``, ``capacity`` bytes each,
allocated up front (``posix_fallocate``: a full disk fails when a segment is
made, never as a SIGBUS when a page is first written). The outbox thread keeps
one spare segment ready and switches to it when the current one passes
``rotate_bytes``; the frame loop switches to it by itself only if the current
one fills up first (an outbox thread stalled for seconds). Segments the outbox
mark has moved past are deleted.

Thread-safety: the frame loop calls :meth:`append` holding :attr:`lock`; the
outbox thread takes the same lock only to swap segments.
"""

from __future__ import annotations

import errno
import logging
import marshal
import mmap
import operator
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from agent.contracts.events import EVENT_TYPES, Event, FaceState
from agent.contracts.labels import LABELS

log = logging.getLogger("agent.mqtt")

_HEAD = struct.Struct("<II")
CAPACITY = 1 << 20  # bytes per segment (about 5,000 events)
ROTATE_BYTES = 256 * 1024  # the outbox thread moves on after this much (a restart reads back at most this)
Mark = tuple[int, int]  # (segment number, byte offset just after the last record that is in the outbox)
_Segment = tuple[int, mmap.mmap]


_FAST = struct.Struct(f"<BBbbqq4ddd{len(LABELS)}d")  # the usual event: FER2013 labels, known type
_FAST_KIND, _GENERIC_KIND = 1, 2  # first byte of a record body
_TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}
_LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}
_PROBS_IN_LABEL_ORDER = operator.itemgetter(*LABELS)


def event_record(event: Event) -> bytes:
    """The event as one journal record body.

    The usual event (a known type, the seven FER2013 labels) is one ``struct``
    pack, 124 bytes, ~0.6 µs; ``struct`` takes numpy scalars as numbers. Anything
    else goes through marshal, with every field made a plain type first (marshal
    would keep a numpy scalar as raw bytes). Raises ``TypeError``/``ValueError``
    for a field that is not a number or text.
    """
    f = event.face
    p = f.probabilities
    prev = event.previous_label
    try:
        if len(p) == len(LABELS):
            x, y, w, h = f.box
            return _FAST.pack(_FAST_KIND, _TYPE_INDEX[event.type], _LABEL_INDEX[f.label],
                              -1 if prev is None else _LABEL_INDEX[prev], f.face_id, event.frame_number,
                              x, y, w, h, f.confidence, event.capture_time, *_PROBS_IN_LABEL_ORDER(p))
    except (KeyError, TypeError, ValueError, struct.error):
        pass  # something unusual: the general form below says what is wrong with it, if anything
    return bytes([_GENERIC_KIND]) + marshal.dumps((
        str(event.type), int(f.face_id), tuple([float(v) for v in f.box]), str(f.label), float(f.confidence),
        {str(k): float(v) for k, v in p.items()}, int(event.frame_number), float(event.capture_time),
        None if prev is None else str(prev)))


def decode_event(body: bytes) -> Event:
    if body[:1] == bytes([_FAST_KIND]):
        _, t, label, prev, face_id, frame, x, y, w, h, confidence, capture_time, *probs = _FAST.unpack(body)
        face = FaceState(face_id=face_id, box=(x, y, w, h), label=LABELS[label], confidence=confidence,
                         probabilities=dict(zip(LABELS, probs, strict=True)))
        return Event(type=EVENT_TYPES[t], face=face, frame_number=frame, capture_time=capture_time,
                     previous_label=None if prev < 0 else LABELS[prev])
    if body[:1] != bytes([_GENERIC_KIND]):
        raise ValueError(f"journal record of unknown kind {body[:1]!r}")
    kind, face_id, box, label, confidence, probs, frame, capture_time, prev = marshal.loads(body[1:])
    face = FaceState(face_id=face_id, box=tuple(box), label=label, confidence=confidence, probabilities=probs)
    return Event(type=kind, face=face, frame_number=frame, capture_time=capture_time, previous_label=prev)


class Journal:
    def __init__(self, base: Path, *, capacity: int = CAPACITY, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.base = Path(base)  # segments are <base>.<n>
        self.capacity = capacity
        self.rotate_bytes = min(rotate_bytes, capacity)
        self.lock = threading.Lock()
        self.segment = 0  # number of the segment append() writes to
        self.size = 0  # bytes used in it
        self.full = False  # the current segment is full and no spare was ready: appends fail until one is
        self.failures = 0  # appends that found no room (each such event is safe only once in the outbox)
        self.last_error: OSError | None = None
        self._map: mmap.mmap | None = None
        self._spare: _Segment | None = None
        self._retired: list[mmap.mmap] = []  # swapped out by the frame loop; unmapped by the outbox thread
        self._made = 0  # highest segment number created
        self._removed_below = 0  # segments below this number are gone
        self.damage: list[str] = []  # what records_after could not read (reported once at start)

    # ---------------------------------------------------------------- frame loop (caller holds self.lock)

    def append(self, body: bytes) -> Mark | None:
        """Copy one record in; returns the mark just after it, or None when there is no room (see ``full``)."""
        end = self.size + _HEAD.size + len(body)
        if end > self.capacity or self._map is None:
            if not self._use_spare():
                self.failures += 1
                return None
            end = self.size + _HEAD.size + len(body)
        mm = self._map
        assert mm is not None
        mm[self.size + _HEAD.size:end] = body
        _HEAD.pack_into(mm, self.size, len(body), zlib.crc32(body))  # last: a kill before this leaves a zero header
        self.size = end
        return self.segment, end

    def _use_spare(self) -> bool:
        spare, self._spare = self._spare, None
        if spare is None:
            self.full = True
            return False
        if self._map is not None:
            self._retired.append(self._map)
        self.segment, self._map = spare
        self.size, self.full = 0, False
        return True

    # ---------------------------------------------------------------- outbox thread / start-up

    def start(self, after: int) -> None:
        """Begin a fresh segment numbered above ``after`` and every existing one, with a spare ready."""
        self._made = max([after] + [n for n, _ in self.segments()])
        first = self._create()
        with self.lock:
            self.segment, self._map, self.size, self.full = first[0], first[1], 0, False
        self._spare = self._create()

    def tend(self) -> None:
        """Each outbox-thread turn: move to the spare when the current segment is due, keep a spare ready,
        unmap what the frame loop swapped out. Raises ``OSError`` when no new segment can be made (full disk)."""
        if self._spare is not None and (self.size >= self.rotate_bytes or self.full):
            with self.lock:
                self._use_spare()
        for mm in self._take_retired():
            mm.close()
        if self._spare is None:
            spare = self._create()
            with self.lock:
                self._spare = spare
                if self.full:
                    self._use_spare()

    def _take_retired(self) -> list[mmap.mmap]:
        with self.lock:
            retired, self._retired = self._retired, []
        return retired

    def _create(self) -> _Segment:
        n = self._made + 1
        path = self.path_of(n)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, self.capacity)  # the blocks exist: no SIGBUS on a full disk later
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(fd, self.capacity)  # no fallocate here (not Linux, or the file system lacks it)
            mm = mmap.mmap(fd, self.capacity)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)  # the map keeps the file
        self._made = n
        return n, mm

    def segments(self) -> list[tuple[int, Path]]:
        found = []
        prefix = self.base.name + "."
        try:
            entries = list(self.base.parent.iterdir())
        except OSError:
            return []
        for p in entries:
            tail = p.name[len(prefix):]
            if p.name.startswith(prefix) and tail.isdigit():
                found.append((int(tail), p))
        return sorted(found)

    def records_after(self, mark: Mark) -> Iterator[tuple[bytes, Mark]]:
        """Record bodies after ``mark``, oldest first, each with the mark just after it.

        What cannot be read (an unreadable or truncated segment, a record whose CRC does not match) ends that
        segment's reading and is noted in :attr:`damage`, for one line at start.
        """
        for segment, path in self.segments():
            if segment < mark[0]:
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.error("MQTT: cannot read the event journal %s: %s; its events are lost", path, exc.strerror)
                self.damage.append(f"{path.name} unreadable ({exc.strerror})")
                continue
            offset = mark[1] if segment == mark[0] else 0
            while True:
                if offset + _HEAD.size > len(data):
                    if offset != len(data) or len(data) < self.capacity:  # our segments are allocated full size
                        self.damage.append(f"{path.name} truncated at byte {len(data)} (its last records are lost)")
                    break
                length, crc = _HEAD.unpack_from(data, offset)
                if length == 0:
                    break  # the end of what was written
                start = offset + _HEAD.size
                body = data[start:start + length]
                if len(body) != length or zlib.crc32(body) != crc:
                    log.warning("MQTT: event journal %s ends in a torn record at byte %d (a power cut while it "
                                "was written?); the events before it are kept", path, offset)
                    rest = len(data[offset:].rstrip(b"\0"))  # written bytes from here on, none readable
                    self.damage.append(f"{path.name} from byte {offset}: a record that does not check out; "
                                       f"{rest} byte(s) after it skipped")
                    break
                offset = start + length
                yield body, (segment, offset)

    def remove_before(self, segment: int) -> None:
        """Delete the segments the outbox holds all of (called after each ingest; cheap when there are none)."""
        if segment <= self._removed_below:
            return
        for n, path in self.segments():
            if n < segment:
                path.unlink(missing_ok=True)
        self._removed_below = segment

    def path_of(self, segment: int) -> Path:
        return self.base.with_name(f"{self.base.name}.{segment}")

    def close(self, remove: bool = False) -> None:
        """Stop taking records; with ``remove`` (every record is in the outbox) delete all segments."""
        with self.lock:
            maps = [m for m in (self._map, self._spare[1] if self._spare else None) if m is not None]
            maps += self._retired
            self._map, self._spare, self._retired = None, None, []
            self.size, self.full = self.capacity, True  # append() after close finds no room and no spare
        for mm in maps:
            mm.close()
        if remove:
            for _, path in self.segments():
                path.unlink(missing_ok=True)
