"""The frame loop's side of the MQTT publisher: what it hands over, journaled, until the outbox holds it.

``event`` copies the event into the :class:`~agent.mqtt.journal.Journal` and
appends it to an in-memory deque; ``state`` only appends (the next snapshot
replaces a lost one). The outbox thread calls :meth:`Intake.ingest` each turn:
it builds the JSON and moves a batch into the SQLite
:class:`~agent.mqtt.outbox.Outbox` together with the journal mark the batch
reaches, in one transaction. When the intake is made, what the journal holds
beyond the outbox's mark (events accepted before a kill or crash) goes into the
outbox first, exactly once.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from agent.contracts.errors import clip
from agent.contracts.events import Event, PublishContext, StateSnapshot
from agent.mqtt.config import MqttConfig
from agent.mqtt.journal import Journal, Mark, decode_event, event_record
from agent.mqtt.outbox import Outbox, OutMessage
from agent.mqtt.payloads import encode, event_payload, state_payload
from agent.mqtt.topics import Topics
from agent.mqtt.trouble import WriteTrouble, describe_write_error

log = logging.getLogger("agent.mqtt")

_INGEST_BATCH = 2000
_STATE_KEY = "state"
_UNUSABLE = (TypeError, ValueError, AttributeError, KeyError, IndexError, EOFError, struct.error)


class Intake:
    def __init__(self, cfg: MqttConfig, ctx: PublishContext, topics: Topics, outbox: Outbox,
                 report_error: Callable[[BaseException], None]) -> None:
        self.cfg, self.ctx, self.topics, self.outbox = cfg, ctx, topics, outbox
        # kind, item, journal mark after it (events that reached the journal) or None
        self.queue: collections.deque[tuple[str, Any, Mark | None]] = collections.deque()
        self.ingesting = 0  # taken off the queue, not yet in the outbox (see MqttPublisher.outbox_depth)
        self.overflow_dropped = 0  # written by the frame loop only
        self.failed_dropped = 0  # written by the outbox thread only (encoding or disk errors)
        self.events_lost = 0  # of those, events (written by the frame loop only): each leaves a gap in seq
        self._lost_numbered = 0  # lost events whose seq numbers have been skipped (outbox thread)
        self.trouble = WriteTrouble(outbox.path.parent)
        self.closed = False
        self._report_error = report_error
        self._next_no_room_log = 0.0
        self.journal = Journal(outbox.path.with_name(outbox.path.stem + ".accepted"))
        self._recover()
        try:
            self.journal.start(after=outbox.journal_mark[0])
            if not self.queue:  # everything readable in them is in the outbox now (else: once it is)
                self.journal.remove_before(self.journal.segment)
        except OSError as exc:  # a full or read-only disk: keep publishing, say so (again each minute)
            self.journal.last_error = exc
            self.no_room()

    # ------------------------------------------------------------------ frame loop

    def event(self, event: Event) -> None:
        """Accept an event: once this returns, it is in the journal and survives the process being killed."""
        try:
            record: bytes | None = event_record(event)
        except (TypeError, ValueError, AttributeError):
            record = None  # not encodable: ingest drops and counts it, as it always did
        journal = self.journal
        with journal.lock:  # uncontended except while the outbox thread switches segments
            mark = journal.append(record) if record is not None else None
            self._enqueue("event", event, mark)
        if mark is None and record is not None and not self.closed:
            self.no_room()

    def state(self, snapshot: StateSnapshot) -> None:
        self._enqueue("state", snapshot, None)

    def _enqueue(self, kind: str, item: Any, mark: Mark | None) -> None:
        q = self.queue
        q.append((kind, item, mark))
        if len(q) > self.cfg.outbox.memory_queue:
            try:
                lost = q.popleft()
            except IndexError:  # the outbox thread emptied it meanwhile
                return
            self.overflow_dropped += 1
            if lost[0] == "event":
                self.events_lost += 1  # its seq number is skipped: subscribers see the gap
        # No wake-up per message: the outbox thread polls and takes the whole batch (see MqttPublisher).

    def no_room(self) -> None:
        """No room in the journal (a full disk, or the outbox thread seconds behind): events are kept in memory
        until they reach the outbox. One line a minute; the frame loop only gets here on this rare path."""
        now = time.monotonic()
        if now >= self._next_no_room_log:
            self._next_no_room_log = now + 60.0
            err = self.journal.last_error
            why = f"cannot make a journal file: {describe_write_error(err)}" if err else "the outbox thread is behind"
            log.error("MQTT: event journal %s* has no room (%s); new events are safe only once they reach the "
                      "outbox (%d not journaled so far)", self.journal.base, why, self.journal.failures)

    # ------------------------------------------------------------------ outbox thread

    def ingest(self, unsent_after: int, final: bool = False) -> None:
        """Move what the frame loop queued into the disk outbox (one transaction per batch).

        ``unsent_after``: outbox rows above this id are not with paho yet (a newer state may replace them).
        A batch that cannot be written (a full disk) goes back to the front of the queue, in order, and is
        tried again every second (see :class:`~agent.mqtt.trouble.WriteTrouble`); nothing is dropped for it.
        """
        if not self.trouble.due() and not final:
            return
        while self.queue:
            items: list[tuple[str, Any, Mark | None]] = []
            q = self.queue
            while q and len(items) < _INGEST_BATCH:
                self.ingesting += 1  # counted before it leaves the queue
                items.append(q.popleft())
            mark = max((m for _, _, m in items if m is not None), default=None)
            skipped = self.events_lost - self._lost_numbered  # events dropped from memory: their numbers stay unused
            seq = self.outbox.next_seq + skipped
            messages, errors, seq = self._messages(items, seq)
            try:
                self.outbox.append(messages, unsent_after=unsent_after, next_seq=seq, journal_mark=mark)
            except sqlite3.Error as exc:  # a full, read-only or failing disk: hold the batch, say so once
                q.extendleft(reversed(items))
                self.ingesting = 0
                self.trouble.failed(exc, len(q), self.cfg.outbox.memory_queue)
                return
            self.ingesting = 0  # after the outbox counts them
            self._lost_numbered += skipped
            self.trouble.succeeded(len(q) + len(messages))
            for error in errors:
                self.failed_dropped += 1
                self._report_error(error)
            if mark is not None:
                self._tend(mark[0])
            if not final:
                break  # one batch per turn, so acks and sending keep up under a flood
        self._tend(None)

    def _messages(self, items: list[tuple[str, Any, Mark | None]], seq: int
                  ) -> tuple[list[OutMessage], list[Exception], int]:
        """The batch as outbox messages; an event that cannot be encoded is reported and uses no ``seq``."""
        last_state = max((i for i, (kind, _, _) in enumerate(items) if kind == "state"), default=-1)
        now = time.time()
        messages: list[OutMessage] = []
        errors: list[Exception] = []
        for i, (kind, item, _) in enumerate(items):
            try:
                if kind == "event":
                    messages.append(self._event_message(item, seq, now))
                    seq += 1
                elif i == last_state:  # older snapshots in the same batch are already stale
                    payload = encode(state_payload(item, self.ctx))
                    messages.append(OutMessage(self.topics.state, payload, self.cfg.qos_state, True,
                                               coalesce=_STATE_KEY, created=now))
            except (TypeError, ValueError, AttributeError, KeyError) as exc:  # e.g. NaN confidence
                errors.append(ValueError(f"cannot encode {kind} (dropped): {exc}"))
        return messages, errors, seq

    def _event_message(self, event: Event, seq: int, now: float) -> OutMessage:
        payload = encode(event_payload(event, self.ctx, uuid.uuid4().hex, seq))
        return OutMessage(self.topics.events, payload, self.cfg.qos_events, False, created=now)

    def _tend(self, outboxed_segment: int | None) -> None:
        """Delete journal segments the outbox holds all of; switch segments when due and keep a spare ready."""
        try:
            if outboxed_segment is not None:
                self.journal.remove_before(outboxed_segment)
            else:
                self.journal.tend()
                self.journal.last_error = None
        except OSError as exc:  # a full or read-only disk: one line a minute, and keep going
            self.journal.last_error = exc
            self.no_room()

    def _recover(self) -> None:
        """Events accepted before an unclean stop (kill -9, crash) that had not reached the outbox: put them in
        now, before anything new, in batches that each store how far they reach. When the disk cannot take
        them (full), they wait at the head of the memory queue like any batch that could not be written."""
        recovered = 0
        pending: list[tuple[str, Any, Mark | None]] = []
        last: Mark | None = None
        for body, at in self.journal.records_after(self.outbox.journal_mark):
            last = at
            try:
                pending.append(("event", decode_event(body), at))
            except _UNUSABLE as exc:
                self.failed_dropped += 1
                log.error("MQTT: event journal record not usable (dropped): %s", exc)
                continue
            recovered += 1
            if len(pending) >= _INGEST_BATCH and not self.queue:
                self._store_recovered(pending)
                pending = []
        if pending and not self.queue:
            self._store_recovered(pending)
        else:
            self.queue.extend(pending)
        if not pending and not self.queue and last is not None:  # only unusable records: do not read them again
            try:
                self.outbox.append([], unsent_after=0, journal_mark=last)
            except sqlite3.Error:
                pass
        if recovered:
            log.warning("MQTT: recovered %d event(s) accepted before the last stop but not yet in the outbox "
                        "(the agent was killed or crashed)", recovered)
        damage = self.journal.damage + self.outbox.damage
        if damage:
            log.error("MQTT: damage found at start in %s: recovered %d event(s) from the journal; skipped: %s",
                      self.outbox.path.parent, recovered, clip("; ".join(damage), 600))

    def _store_recovered(self, items: list[tuple[str, Any, Mark | None]]) -> None:
        seq = self.outbox.next_seq
        now = time.time()
        messages = []
        for _, event, _ in items:
            messages.append(self._event_message(event, seq, now))
            seq += 1
        try:
            self.outbox.append(messages, unsent_after=0, next_seq=seq, journal_mark=items[-1][2])
        except sqlite3.Error as exc:  # kept in order in memory (and still in the journal): stored once it can be
            self.queue.extend(items)
            self.trouble.failed(exc, len(self.queue), self.cfg.outbox.memory_queue)

    def close(self, all_in_outbox: bool) -> None:
        """Stop journaling; the journal goes when everything it holds is in the outbox (a clean stop)."""
        self.closed = True
        self.journal.close(remove=all_in_outbox)
