"""Messages the broker will not take: moved aside and counted, never retried in a loop.

A broker closes the connection on a packet over its size limit (mosquitto
``max_packet_size``). Re-sending the same oldest message after every
reconnect would block the queue behind it forever and flap the retained
``online``/``offline`` status. Two ways to know the limit:

* **MQTT 5**: the broker announces ``Maximum Packet Size`` in CONNACK; every
  message is measured (:func:`packet_size`) before it is handed to paho.
* **Learned** (MQTT 3.1.1, or a v5 broker that announces nothing): the broker
  handles packets in order and answers each QoS 1/2 one before it reads the
  next, so when it closes the connection the oldest message not yet answered
  is the one it refused. The same message at the head twice in a row, each time
  within ``QUICK_DROP_S`` of connecting (a broker restart would not do that),
  or a v5 DISCONNECT with reason "Packet too large" at once, makes its size the
  learned limit: messages that large or larger are moved aside from then on.

Thread-safety: paho's network thread calls :meth:`acked`, :meth:`connected`,
:meth:`dropped`; the outbox thread calls :meth:`sent` and :meth:`too_big`.
Single dict operations are atomic under the GIL; the ordered dict is copied
before it is read.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

log = logging.getLogger("agent.mqtt")

QUICK_DROP_S = 10.0  # a connection closed this soon after it was accepted may be a refusal
_PACKET_TOO_LARGE = 0x95  # MQTT 5 reason code


def packet_size(topic: str, payload: bytes, qos: int, v5: bool) -> int:
    """Bytes of the PUBLISH packet on the wire (no MQTT 5 properties: the agent sends none)."""
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + (1 if v5 else 0) + len(payload)
    length_bytes = 1
    while remaining >= 128 ** length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


class PacketLimit:
    """What the broker accepts, and the messages moved aside because it does not."""

    def __init__(self, broker: str, v5: bool, clock: Any = time.monotonic) -> None:
        self.broker = broker
        self.v5 = v5
        self._clock = clock
        self.announced: int | None = None  # MQTT 5 CONNACK Maximum Packet Size
        self.learned: int | None = None  # smallest packet size seen refused (messages >= this are moved aside)
        self.refused = 0  # messages moved aside since start
        self.largest_refused = 0
        self._in_flight: collections.OrderedDict[int, tuple[str, int, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._connected_at = 0.0
        self._suspect: str | None = None  # head of the queue when the last quick drop happened
        self._logged_topics: set[str] = set()

    # ---------------------------------------------------------------- checks

    def too_big(self, size: int) -> bool:
        return (self.announced is not None and size > self.announced) or (
            self.learned is not None and size >= self.learned)

    def limit_text(self) -> str:
        if self.announced is not None:
            return f"the broker's Maximum Packet Size is {self.announced} bytes"
        if self.learned is not None:
            return f"the broker closed the connection on a {self.learned}-byte message"
        return "no limit known"

    def moved_aside(self, what: str, size: int) -> None:
        """Count one message not sent; the first one (and every 1000th) is logged with its size and the limit."""
        self.refused += 1
        self.largest_refused = max(self.largest_refused, size)
        if self.refused == 1 or self.refused % 1000 == 0:
            log.error("MQTT: broker %s does not take a %d-byte message (%s): %s; moved aside, not retried "
                      "(%d so far; raise the broker's max_packet_size to receive them)",
                      self.broker, size, what, self.limit_text(), self.refused)

    def skip_once(self, topic: str, size: int) -> None:
        """A retained message published on connect (discovery) that the broker would refuse: one line per topic."""
        if topic not in self._logged_topics:
            self._logged_topics.add(topic)
            self.moved_aside(topic, size)

    def describe(self) -> str:
        """For ``fer-agent health``."""
        return f"broker refused {self.refused} message(s) (largest {self.largest_refused} bytes; {self.limit_text()})"

    # ---------------------------------------------------------------- what is on the wire

    def connected(self, properties: Any) -> None:
        size = getattr(properties, "MaximumPacketSize", None) if self.v5 else None
        self.announced = int(size) if size else None
        with self._lock:
            self._in_flight.clear()
        self._connected_at = self._clock()

    def sent(self, mid: int, what: str, size: int, qos: int) -> None:
        with self._lock:
            self._in_flight[mid] = (what, size, qos)

    def acked(self, mid: int) -> None:
        """The broker answered ``mid``: it and every QoS 0 message sent before it were accepted."""
        with self._lock:
            if mid not in self._in_flight:
                return
            while self._in_flight:
                first, (_, _, qos) = next(iter(self._in_flight.items()))
                if first != mid and qos > 0:
                    break  # an older QoS 1 message still waits for its own answer
                del self._in_flight[first]
                if first == mid:
                    break

    def dropped(self, reason: Any) -> str | None:
        """The connection closed; returns what was refused when this tells (and lowers the learned limit)."""
        with self._lock:
            head = next(iter(self._in_flight.values()), None)
            self._in_flight.clear()
        quick = self._clock() - self._connected_at <= QUICK_DROP_S
        if head is None or not quick:
            self._suspect = None
            return None
        what, size, _ = head
        too_large = getattr(reason, "value", None) == _PACKET_TOO_LARGE
        if not too_large and self._suspect != what:
            self._suspect = what  # once could be chance (a broker restart); twice in a row is the broker
            return None
        self._suspect = None
        if self.learned is None or size < self.learned:
            self.learned = size
            log.error("MQTT: broker %s closed the connection %s right after a %d-byte message (%s); messages of "
                      "%d bytes or more are moved aside from now on (mosquitto max_packet_size?)", self.broker,
                      "with 'Packet too large'" if too_large else "twice in a row", size, what, size)
        return what
