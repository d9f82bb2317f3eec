"""Messages the broker will not take: moved aside and counted, never retried in a loop.

A broker closes the connection on a packet over its size limit (mosquitto
``max_packet_size``). Re-sending the same oldest message after every
reconnect would block the queue behind it forever and flap the retained
``online``/``offline`` status. Two ways to know the limit:

* **MQTT 5**: the broker announces ``Maximum Packet Size`` in CONNACK; every
  message is measured (:func:`packet_size`) before it is handed to paho.
* **Learned** (MQTT 3.1.1, or a v5 broker that announces nothing): when the
  broker closes the connection because of a packet's size, the refused message
  is among those it has not answered, so the largest of them is too large as
  well. A close counts as such evidence only when it comes within
  ``QUICK_DROP_S`` of connecting *and* the very next connect succeeds (a broker
  that was restarted or killed refuses connections for a while). Two such
  closes in a row (or one MQTT 5 DISCONNECT "Packet too large") make the larger
  of the two sizes the learned limit: messages that large or larger are moved
  aside from then on. The limit is only ever one some message really hit.

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
        self._pending: tuple[str, int] | None = None  # largest unanswered message at the last quick close
        self._evidence: tuple[str, int] | None = None  # the same from the close before, confirmed by a reconnect
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
        pending, self._pending = self._pending, None
        if pending is None:
            self._evidence = None
        elif self._evidence is None:
            self._evidence = pending  # once could be chance; twice in a row is the broker
        else:
            self._learn(max(pending, self._evidence, key=lambda p: p[1]), "twice in a row")
            self._evidence = None

    def connect_failed(self) -> None:
        """A connect attempt failed: the last close was an outage or a restart, not a refused message."""
        self._pending = self._evidence = None

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

    def dropped(self, reason: Any) -> None:
        """The connection closed: remember the largest message the broker had not answered (see the module doc)."""
        with self._lock:
            unanswered = [(what, size) for what, size, _ in self._in_flight.values()]
            self._in_flight.clear()
        quick = self._clock() - self._connected_at <= QUICK_DROP_S
        if not unanswered or not quick:
            self._pending = self._evidence = None
            return
        largest = max(unanswered, key=lambda p: p[1])
        if getattr(reason, "value", None) == _PACKET_TOO_LARGE:
            self._learn(largest, "with 'Packet too large'")
            self._evidence = None
        else:
            self._pending = largest

    def _learn(self, message: tuple[str, int], how: str) -> None:
        what, size = message
        if self.learned is None or size < self.learned:
            self.learned = size
            log.error("MQTT: broker %s closed the connection %s while a %d-byte message (%s) was not answered; "
                      "messages of %d bytes or more are moved aside from now on (mosquitto max_packet_size?)",
                      self.broker, how, size, what, size)
