"""Bounded, ordered, on-disk queue of messages not yet acknowledged by the broker.

Why SQLite: it is in the Python standard library, a committed row survives a
crash or power cut, and deleting the oldest rows when a limit is hit is one
statement. Rows are sent in ``id`` order and deleted only when the broker has
acknowledged them (QoS 1/2), so an outage or an agent restart loses nothing
that reached the disk; a re-send after a restart may duplicate a message,
which subscribers de-duplicate by ``event_id``.

Not thread-safe on purpose: only the publisher's outbox thread touches it.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from agent.contracts.errors import FerError

log = logging.getLogger("agent.mqtt")


@dataclass(frozen=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    coalesce: str | None = None  # a newer message with the same key replaces an unsent older one
    created: float = 0.0


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    coalesce_key TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    def __init__(self, path: Path, *, max_messages: int, max_bytes: int, max_age_s: float) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.dropped = 0  # since this process opened the queue
        self.damage: list[str] = []  # found when opening: reported with the journal's (see Intake)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FerError(f"mqtt outbox: cannot create state directory {self.path.parent}: {exc.strerror}") from None
        self._check_wal()
        try:
            self._open()
        except sqlite3.OperationalError as exc:  # permissions, read-only file system, locked: the user must act
            raise FerError(f"mqtt outbox {self.path}: cannot open queue database: {exc}") from None
        except sqlite3.DatabaseError as exc:
            # A corrupt file (power cut on a bad SD card) must not keep an unattended board from publishing:
            # keep it for inspection and start an empty queue.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("mqtt outbox %s is corrupt (%s); moved to %s, starting an empty queue", self.path, exc, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self._open()

    def _check_wal(self) -> None:
        """A write-ahead log with a damaged header is ignored by SQLite without a word (the transactions in it
        are gone): say so, and keep the file for inspection."""
        wal = Path(f"{self.path}-wal")
        try:
            with wal.open("rb") as fh:
                head = fh.read(32)
            size = wal.stat().st_size
        except OSError:
            return  # none (a clean stop removes it), or unreadable: SQLite reports that itself
        if not head or _valid_wal_header(head):
            return
        aside = wal.with_name(f"{wal.name}.damaged-{int(time.time())}")
        try:
            wal.rename(aside)
            Path(f"{self.path}-shm").unlink(missing_ok=True)
        except OSError:
            aside = wal
        self.damage.append(f"the queue's write-ahead log {wal.name} ({size} bytes) has no valid header, kept as "
                           f"{aside.name}: the messages last committed to it are lost unless the journal has them")

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=2.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed row survives a process crash; a power
            # cut may lose the last few transactions - a fair trade for flash wear.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self.depth, self.bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except BaseException:
            self._db.close()
            raise
        self.next_seq = int(meta.get("next_seq", 1))
        # How far into the event journal (agent.mqtt.journal) the rows here reach: (segment, byte offset).
        self.journal_mark = (int(meta.get("journal_segment", 0)), int(meta.get("journal_offset", 0)))

    def append(self, messages: list[OutMessage], *, unsent_after: int, next_seq: int | None = None,
               journal_mark: tuple[int, int] | None = None) -> int:
        """Store messages in order (one transaction); returns how many old ones were dropped to make room.

        ``unsent_after``: rows with a larger id have not been handed to the
        broker yet, so a coalescing message may replace them. ``journal_mark``:
        the journal position these messages reach, stored in the same transaction
        so a record is never put in twice nor skipped.
        """
        if not messages and next_seq is None and journal_mark is None:
            return 0
        dropped_before = self.dropped
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for m in messages:
                if m.coalesce is not None:
                    self._delete("coalesce_key=? AND id>?", (m.coalesce, unsent_after))
                db.execute(
                    "INSERT INTO outbox(topic, payload, qos, retain, created, coalesce_key) VALUES (?,?,?,?,?,?)",
                    (m.topic, m.payload, m.qos, int(m.retain), m.created or time.time(), m.coalesce))
                self.depth += 1
                self.bytes += len(m.payload)
            self._enforce_limits()
            meta: list[tuple[str, int]] = []
            if next_seq is not None:
                meta.append(("next_seq", next_seq))
            if journal_mark is not None:
                meta += [("journal_segment", journal_mark[0]), ("journal_offset", journal_mark[1])]
            db.executemany("INSERT INTO meta(key, value) VALUES(?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET value=excluded.value", meta)
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if next_seq is not None:
            self.next_seq = next_seq
        if journal_mark is not None:
            self.journal_mark = journal_mark
        return self.dropped - dropped_before

    def _enforce_limits(self) -> None:
        over = self.depth - self.max_messages
        if over > 0:
            self._drop_oldest(over)
        while self.bytes > self.max_bytes and self.depth > 0:
            # Drop in chunks sized from the average row so a large backlog is trimmed in few statements.
            avg = max(1, self.bytes // max(1, self.depth))
            self._drop_oldest(max(1, (self.bytes - self.max_bytes) // avg))

    def _drop_oldest(self, n: int) -> None:
        last = self._db.execute("SELECT id FROM outbox ORDER BY id LIMIT 1 OFFSET ?", (n - 1,)).fetchone()
        if last is not None:
            self.dropped += self._delete("id<=?", (last[0],))

    def _delete(self, where: str, params: tuple) -> int:
        """Delete matching rows and keep the depth/bytes counters right (no RETURNING: SQLite < 3.35 on boards)."""
        count, size = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE {where}", params).fetchone()
        if count:
            self._db.execute(f"DELETE FROM outbox WHERE {where}", params)
            self.depth -= count
            self.bytes -= size
        return count

    def expire(self, now: float | None = None) -> int:
        """Drop messages older than ``max_age_s``; returns how many."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        oldest = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:  # rows are appended in time order: cheap common case
            return 0
        n = self._delete("created < ?", (cutoff,))
        self.dropped += n
        return n

    def after(self, last_id: int, limit: int) -> list[Row]:
        """The next rows to hand to the broker, oldest first."""
        cur = self._db.execute(
            "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit))
        return [Row(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in cur.fetchall()]

    def ack(self, ids: list[int]) -> None:
        """The broker has the messages: forget them."""
        if not ids:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                self._delete(f"id IN ({marks})", tuple(chunk))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Undo a failed transaction and put the counters right again.

        SQLite rolls back by itself on some errors (``SQLITE_FULL``): a second
        ``ROLLBACK`` would raise "no transaction is active" and hide the real cause.
        """
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._recount()

    def _recount(self) -> None:
        self.depth, self.bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()

    def close(self) -> None:
        self._db.close()


def _valid_wal_header(head: bytes) -> bool:
    """SQLite's WAL header: magic, format 3007000, and the checksum of its first 24 bytes (sqlite.org/fileformat)."""
    if len(head) < 32:
        return False
    magic, version = struct.unpack(">II", head[:8])
    if magic not in (0x377F0682, 0x377F0683) or version != 3007000:
        return False
    words = struct.unpack((">" if magic & 1 else "<") + "6I", head[:24])
    s0 = s1 = 0
    for i in range(0, 6, 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return (s0, s1) == struct.unpack(">II", head[24:32])
