"""From the on-disk outbox to paho: the window of rows in flight, acknowledgements, rows moved aside.

Runs on the publisher's outbox thread only (paho's network thread merely
flags a new connection through :meth:`Sender.new_connection`). Rows go to
paho in id order; on each connect paho's own queue has been dropped, so the
next turn sends again from the oldest row the broker has not acknowledged.
A row the broker would refuse (see :mod:`agent.mqtt.refusal`) is deleted and
counted instead of being sent. Deleting on a full disk can fail: the ids are
kept and deleted later (they are not sent again meanwhile).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.mqtt.outbox import Outbox
from agent.mqtt.refusal import PacketLimit, packet_size
from agent.mqtt.trouble import WriteTrouble

log = logging.getLogger("agent.mqtt")


class Sender:
    def __init__(self, outbox: Outbox, limit: PacketLimit, broker: str) -> None:
        self.outbox = outbox
        self.limit = limit
        self.broker = broker
        self.mid_rows: dict[int, int] = {}  # paho message id -> outbox row id, QoS 1/2 not yet acknowledged
        self.sent_upto = 0  # rows with id <= this have been handed to paho
        self.rejected = 0  # QoS 1/2 messages an MQTT 5 broker answered with a failure
        self._resend = False  # set on connect: paho's queue was dropped, send again from the oldest unacked row
        self._gen = 0  # connections accepted so far: a send loop stops when a new one begins
        self._ack_retry: list[int] = []  # acknowledged rows the disk could not delete yet (full disk)
        self._ack_trouble = WriteTrouble(Path(outbox.path).parent, what="outbox (deleting sent messages)")

    def new_connection(self) -> None:
        """paho's network thread, on connect (after dropping paho's queue)."""
        self._resend = True
        self._gen += 1

    def process_acks(self, acks: collections.deque[tuple[int, bool]]) -> None:
        ids: list[int] = []
        while acks:
            mid, failed = acks.popleft()
            row = self.mid_rows.pop(mid, None)
            if row is None:
                continue  # status/discovery/stats, or a row we already gave up on
            if failed:  # MQTT 5 broker said no (e.g. not authorised): retrying would never succeed
                self.rejected += 1
                if self.rejected == 1 or self.rejected % 1000 == 0:
                    log.error("MQTT: broker %s rejected %d message(s) (not authorised for the topic?)",
                              self.broker, self.rejected)
            ids.append(row)
        self.delete(ids)

    def delete(self, ids: list[int]) -> None:
        """Forget rows the broker has (or refuses); on a full disk keep the ids and try again later."""
        ids = self._ack_retry + ids
        if not ids or (self._ack_retry and not self._ack_trouble.due()):
            self._ack_retry = ids
            return
        try:
            self.outbox.ack(ids)
        except sqlite3.Error as exc:
            self._ack_retry = ids  # sent_upto is past them: they are not sent again meanwhile
            self._ack_trouble.failed(exc, len(ids), len(ids))
            return
        self._ack_retry = []
        self._ack_trouble.succeeded(0)

    def send(self, client: mqtt.Client, window: int, connected: Callable[[], bool]) -> None:
        """Hand the next rows to paho, up to ``window`` in flight."""
        gen = self._gen
        if self._resend:
            self._resend = False
            self.mid_rows.clear()
            self.sent_upto = 0
        room = window - len(self.mid_rows)
        if room <= 0:
            return
        done: list[int] = []  # QoS 0 rows handed over, and rows moved aside
        acked = set(self._ack_retry)
        for row in self.outbox.after(self.sent_upto, room):
            if not connected() or gen != self._gen:
                break
            if row.id in acked:
                self.sent_upto = row.id
                continue
            size = packet_size(row.topic, row.payload, row.qos, self.limit.v5)
            if self.limit.too_big(size):
                self.limit.moved_aside(f"{row.topic} #{row.id}", size)
                done.append(row.id)
                self.sent_upto = row.id
                continue
            info = client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if row.qos == 0:
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # not connected after all: keep it for later
                done.append(row.id)  # QoS 0 is at most once: once handed over, it is gone
            elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                break  # paho's own queue refused it; try again later
            else:
                self.mid_rows[info.mid] = row.id
            self.limit.sent(info.mid, f"{row.topic} #{row.id}", size, row.qos)
            self.sent_upto = row.id
        if done:
            self.delete(done)
