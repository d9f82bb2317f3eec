"""The publish stage: the frame loop hands over events, state and stats; MQTT happens elsewhere.

Three threads, so that the frame loop never waits on the network or the disk:

* the **caller** (frame loop) hands events and state to the
  :class:`~agent.mqtt.intake.Intake`: each event is copied into a memory-mapped
  journal (so an accepted event survives ``kill -9``) and appended to an
  in-memory deque - microseconds, no system call, never waiting on the network
  or the disk;
* the **outbox thread** builds the JSON, writes events and state to the
  on-disk :class:`~agent.mqtt.outbox.Outbox` (in order, bounded), hands the
  oldest unsent rows to paho while connected (a window of ``outbox.inflight``)
  and deletes rows when the broker acknowledges them;
* **paho's network thread** connects, reconnects with back-off, and on each
  connect publishes the retained ``online`` status and Home Assistant discovery.

Ordering: rows go to paho in id order. On each connect paho's own queue of
unacknowledged messages is dropped and the outbox thread sends again from the
oldest row the broker has not acknowledged, so subscribers see events in order
(with possible QoS 1 duplicates, which carry the same ``event_id``), and a
message the broker refuses (too large) can be moved aside instead of being
re-sent by paho after every reconnect (see :mod:`agent.mqtt.refusal`).

A disk that cannot be written (full, read-only) is a state, not an error: see
:mod:`agent.mqtt.trouble`; :attr:`MqttPublisher.problems` says what is degraded.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.contracts.errors import ConfigError, FerError
from agent.contracts.events import Event, PublishContext, StateSnapshot
from agent.mqtt.config import MqttConfig
from agent.mqtt.connection import Backoff, FailureLog, FerMqttClient, build_client, describe_error
from agent.mqtt.discovery import discovery_messages
from agent.mqtt.intake import Intake
from agent.mqtt.outbox import Outbox
from agent.mqtt.payloads import STATUS_OFFLINE, STATUS_ONLINE, encode, stats_payload
from agent.mqtt.refusal import PacketLimit, packet_size
from agent.mqtt.sender import Sender
from agent.mqtt.topics import Topics
from agent.mqtt.trouble import describe_write_error

log = logging.getLogger("agent.mqtt")

OUTBOX_FILE = "mqtt-outbox.sqlite3"
_TICK_S = 0.02  # outbox thread period while busy: batches work at high event rates
_IDLE_TICK_S = 0.1  # ... while idle: the most latency a sparse event gets
_REANNOUNCE_S = 5.0  # Home Assistant births within this are answered with one discovery re-publish


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """An exception escaping a paho callback would end paho's network thread (no more reconnects): log it."""

    @functools.wraps(callback)
    def wrapper(self: MqttPublisher, *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception as exc:
            self._report_error(exc)

    return wrapper


class MqttPublisher:
    """Non-blocking MQTT publisher with an on-disk outbox. See ``docs/mqtt.md`` for the wire contract."""

    def __init__(self, cfg: MqttConfig, ctx: PublishContext, state_dir: Path) -> None:
        self.cfg = cfg
        if not ctx.device_id:
            raise ValueError("PublishContext.device_id is empty: resolve it once with MqttConfig.resolved_device_id()")
        self.ctx = ctx  # frozen: backend_changed swaps in a new one
        self.topics = Topics(cfg.prefix, ctx.device_id, cfg.discovery.prefix)
        self.client_id = cfg.resolved_client_id(ctx.device_id)
        path = Path(cfg.outbox.file) if cfg.outbox.file else Path(state_dir) / OUTBOX_FILE
        self._outbox = Outbox(path, max_messages=cfg.outbox.max_messages, max_bytes=cfg.outbox.max_bytes,
                              max_age_s=cfg.outbox.max_age_s)
        self._acks: collections.deque[tuple[int, bool]] = collections.deque()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._client: FerMqttClient | None = None
        self._backoff = Backoff(cfg.reconnect.min_delay_s, cfg.reconnect.max_delay_s)
        self._failures = FailureLog(log)  # a run of the same connect failure: 1st, 2nd, 4th, ... logged
        self._connected = False
        self._closing = False
        self._close_deadline = 0.0
        self._refused: str | None = None
        self._limit = PacketLimit(f"{cfg.host}:{cfg.port}", cfg.protocol == "5")
        self._sender = Sender(self._outbox, self._limit, f"{cfg.host}:{cfg.port}")
        self._errors = 0
        self._next_error_log = 0.0
        self._closed = False
        self._idle = False  # set by the outbox thread when it may poll less often
        self._window = cfg.outbox.inflight  # QoS 1/2 outbox messages handed to paho and not yet acknowledged
        self._pending_stats: Mapping[str, Any] | None = None
        self._pending_summary: Mapping[str, Any] | None = None
        self._announce_due = False  # Home Assistant said online: discovery again (paho thread sets, outbox thread acts)
        self._next_announce = 0.0
        self._started = time.monotonic()
        self._broker = f"{cfg.host}:{cfg.port}"
        try:
            self._intake = Intake(cfg, self.ctx, self.topics, self._outbox, self._report_error)
        except FerError:
            self._outbox.close()
            raise
        self._queue = self._intake.queue  # what the frame loop handed over and the outbox does not hold yet
        self._journal = self._intake.journal

    # ------------------------------------------------------------------ frame-loop API (never blocks)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def outbox_depth(self) -> int:
        """Messages not yet acknowledged by the broker (memory + disk).

        Read from the upstream end (queue, batch being ingested, outbox): a
        message moving downstream meanwhile may be counted twice, never missed.
        """
        queued = len(self._queue)
        ingesting = self._intake.ingesting
        return queued + ingesting + self._outbox.depth

    @property
    def dropped(self) -> int:
        """Events/state dropped since start: queue limits (count, bytes, age) or frame loop outrunning the disk."""
        return self._outbox.dropped + self._intake.overflow_dropped + self._intake.failed_dropped

    @property
    def problems(self) -> list[str]:
        """What is degraded now, one short text each, for ``fer-agent health`` (empty when all is well)."""
        out = []
        trouble = self._intake.trouble
        if trouble.active:
            out.append(trouble.describe(len(self._queue)))
        journal = self._journal
        if journal.last_error is not None:
            out.append(f"event journal {journal.base}.*: {describe_write_error(journal.last_error)}; new events "
                       "are safe only once they reach the outbox")
        if self._intake.events_lost:
            out.append(f"{self._intake.events_lost} event(s) lost while the disk could not be written "
                       "(memory bound reached; gaps in seq)")
        if self._limit.refused:
            out.append(self._limit.describe())
        return out

    def publish_event(self, event: Event) -> None:
        """Accept an event: once this returns, it is in the journal and survives the process being killed."""
        self._intake.event(event)
        if self._idle:
            # A sparse event should not wait out the idle poll (up to _IDLE_TICK_S of latency). Only
            # while idle: under a flood the thread is busy, so the frame loop pays no hand-over per event.
            self._idle = False
            self._wake.set()

    def publish_state(self, snapshot: StateSnapshot) -> None:
        """State is not journaled: the next snapshot replaces it anyway."""
        self._intake.state(snapshot)

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Latest stats win; sent only while connected (they are periodic, QoS 0 by default)."""
        self._pending_stats = dict(stats)

    def publish_summary(self, summary: Mapping[str, Any]) -> None:
        """The audience summary (retained, ``agent.summary``): like stats, the newest waits for a connection."""
        self._pending_summary = summary

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background; returns at once. Raises ``ConfigError`` for bad TLS files or credentials."""
        if self._client is not None:
            return
        if not self.cfg.host:
            raise ConfigError("mqtt.host: no broker configured (fer-agent demo starts an embedded one)")
        client = build_client(self.cfg, self.client_id, self.topics.status)
        # Room for our window plus status/discovery published on connect.
        client.max_inflight_messages_set(self.cfg.outbox.inflight + 8)
        client.reconnect_delay_set(self._backoff.min_delay, self._backoff.min_delay)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        self._worker = threading.Thread(target=self._run, name="fer-mqtt-outbox", daemon=True)
        self._worker.start()
        log.info("MQTT: connecting to %s as %s (topics %s/...)", self._broker, self.client_id, self.topics.base)
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        client.loop_start()

    def close(self, timeout: float | None = None) -> None:
        """Drain what can be sent within ``timeout``, publish ``offline``, disconnect. The rest stays on disk."""
        if self._closed:
            return
        self._closed = True
        timeout = self.cfg.outbox.drain_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        client = self._client
        self._close_deadline = deadline
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            self._worker.join(max(0.5, timeout + 2.0))
        worker_done = self._worker is None or not self._worker.is_alive()
        all_in_outbox = False
        if worker_done:
            try:
                self._ingest(final=True)  # what is left in memory goes to disk (also covers close() without start())
                all_in_outbox = not self._queue
            except Exception as exc:
                self._report_error(exc)
        if client is not None:
            if self._connected:
                info = client.publish(self.topics.status, STATUS_OFFLINE, qos=1, retain=True)
                try:
                    info.wait_for_publish(max(1.0, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    pass
            if worker_done:
                try:
                    self._process_acks()
                except Exception as exc:
                    self._report_error(exc)
            client.disconnect()
            client.loop_stop()
        self._connected = False
        left = self._outbox.depth
        self._intake.close(all_in_outbox)  # the journal goes once everything is in the outbox
        self._outbox.close()
        if left:
            log.warning("MQTT: %d message(s) still queued in %s; they are sent after the next start",
                        left, self._outbox.path)
        if self._queue:
            log.error("MQTT: %d message(s) could not be written to %s (%s); the events among them that are in the "
                      "journal are recovered at the next start, the rest are lost", len(self._queue),
                      self._outbox.path.parent, self._intake.trouble.cause or "not written")
        log.info("MQTT: closed")

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ paho callbacks (network thread)

    @_guarded
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        detail = getattr(properties, "ReasonString", None)  # MQTT 5 brokers may explain a refusal
        if reason.is_failure:
            self._refused = f"{reason} ({detail})" if detail else str(reason)
            self._limit.connect_failed()
            return
        self._refused = None
        receive_max = getattr(properties, "ReceiveMaximum", None)  # MQTT 5: the broker's in-flight limit
        # paho does not apply it by itself and exceeding it makes the broker drop the connection; keep
        # room for status and discovery (3 QoS 1 messages) published here.
        self._window = min(self.cfg.outbox.inflight, max(1, int(receive_max) - 4)) if receive_max \
            else self.cfg.outbox.inflight
        self._backoff.reset()
        client.reconnect_delay_set(self._backoff.min_delay, self._backoff.min_delay)
        # What paho still holds from the last connection is sent again from the outbox, in order; paho's own
        # re-send would repeat a message the broker refuses after every reconnect.
        client.drop_out_messages()
        self._limit.connected(properties)
        self._sender.new_connection()
        log.info("MQTT: connected to %s%s", self._broker, self._failures.succeeded())
        try:
            self._publish(client, self.topics.status, STATUS_ONLINE, qos=1, retain=True)
            if self.cfg.discovery.enabled:
                client.subscribe(self.topics.ha_birth, qos=0)
                self._publish_discovery(client)
        finally:  # after status and discovery (the broker meets them first), even if discovery failed
            self._connected = True
            self._wake.set()

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes | str, qos: int, retain: bool) -> None:
        """Status, discovery, stats: skipped (one line) when the broker would refuse them."""
        data = payload.encode() if isinstance(payload, str) else payload
        size = packet_size(topic, data, qos, self._limit.v5)
        if self._limit.too_big(size):
            self._limit.skip_once(topic, size)
            return
        info = client.publish(topic, data, qos=qos, retain=retain)
        self._limit.sent(info.mid, topic, size, qos)

    def backend_changed(self, name: str, reason: str, detail: str | None = None) -> None:
        """A runtime fallback took over: later payloads and Home Assistant discovery name backend ``name``.

        Events and stats read the context when they are encoded, so swapping it is enough for them.
        """
        self.ctx = self.ctx.with_backend(name, reason, detail)
        self._intake.ctx = self.ctx
        client = self._client
        if client is not None and self._connected:
            self._publish_discovery(client)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        if not self.cfg.discovery.enabled:
            return
        for topic, payload in discovery_messages(self.topics, self.ctx, self.cfg.discovery.device_name):
            self._publish(client, topic, payload, qos=1, retain=True)

    def _retry_in(self, client: mqtt.Client) -> float:
        delay = self._backoff.next_delay()
        client.reconnect_delay_set(delay, delay)
        return delay

    @_guarded
    def _on_connect_fail(self, client: FerMqttClient, userdata: Any) -> None:
        if self._closing:
            return
        self._limit.connect_failed()
        delay = self._retry_in(client)
        self._failures.failed(logging.WARNING, f"cannot connect to {self._broker}: {describe_error(client.last_error)}",
                              delay, self._backoff.attempt)

    @_guarded
    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = self._connected
        self._connected = False
        if self._closing:
            return
        self._limit.dropped(reason)
        delay = self._retry_in(client)
        if self._refused:
            self._failures.failed(logging.ERROR, f"broker {self._broker} refused the connection: {self._refused}",
                                  delay, self._backoff.attempt)
            self._refused = None  # the next attempt reports its own outcome
        elif was_connected:
            log.warning("MQTT: lost connection to %s (%s); queueing to disk, retrying in %.1f s",
                        self._broker, reason, delay)
        else:
            hint = "; does the broker require a client certificate (mqtt.tls.cert_file)?" if (
                self.cfg.tls.enabled and not self.cfg.tls.cert_file) else ""
            self._failures.failed(logging.WARNING,
                                  f"connection to {self._broker} closed before it was accepted ({reason}{hint})",
                                  delay, self._backoff.attempt)

    @_guarded
    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._limit.acked(mid)
        self._acks.append((mid, bool(getattr(reason, "is_failure", False))))  # handled on the next tick

    @_guarded
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.ha_birth and msg.payload == b"online":
            self._announce_due = True  # coalesced: see _reannounce

    def _reannounce(self) -> None:
        """Discovery again after Home Assistant's ``online``, at most once per ``_REANNOUNCE_S``: a flood of
        births (a looping HA, a hostile client) must not turn into a flood of retained re-publishes and lines."""
        now = time.monotonic()
        if not self._announce_due or now < self._next_announce or self._client is None:
            return
        self._announce_due = False
        self._next_announce = now + _REANNOUNCE_S
        log.info("MQTT: Home Assistant came online; publishing discovery again")
        self._publish_discovery(self._client)

    # ------------------------------------------------------------------ outbox thread

    def _run(self) -> None:
        last_expire = 0.0
        while True:
            self._wake.wait(_IDLE_TICK_S if self._idle else _TICK_S)
            self._wake.clear()
            now = time.monotonic()
            try:
                self._ingest(final=self._closing)
                self._process_acks()
                if self._connected:
                    self._send()
                    self._send_stats()
                    self._send_summary()
                    self._reannounce()
                if now - last_expire > 1.0 and not self._intake.trouble.active:  # a full disk cannot delete
                    last_expire = now
                    self._outbox.expire()
            except Exception as exc:  # a full or broken disk, or a bug: report, keep going, never stop the agent
                self._report_error(exc)
                if not self._closing:
                    self._wake.wait(0.5)
            # Idle = nothing in flight or waiting: poll less often.
            self._idle = not (self._queue or self._acks or self._sender.mid_rows
                              or (self._connected and (self._outbox.depth or self._pending_stats is not None
                                                      or self._pending_summary is not None)))
            if self._closing:
                done = self._outbox.depth == 0 and not self._queue
                if done or not self._connected or time.monotonic() >= self._close_deadline:
                    try:
                        self._process_acks()
                    except Exception as exc:
                        self._report_error(exc)
                    return
                self._wake.wait(0.02)  # give acks time to arrive while draining

    def _report_error(self, exc: BaseException) -> None:
        """At most one traceback per minute, with a count of the ones left out."""
        self._errors += 1
        now = time.monotonic()
        if now >= self._next_error_log:
            self._next_error_log = now + 60.0
            log.error("MQTT: internal error (%d so far): %s", self._errors, exc, exc_info=exc)

    def _ingest(self, final: bool = False) -> None:
        """Move what the frame loop queued into the disk outbox (see Intake.ingest)."""
        self._intake.ingest(self._sender.sent_upto, final)

    def _process_acks(self) -> None:
        self._sender.process_acks(self._acks)

    def _send(self) -> None:
        assert self._client is not None
        self._sender.send(self._client, self._window, lambda: self._connected)

    def _send_stats(self) -> None:
        stats, self._pending_stats = self._pending_stats, None
        if stats is None or self._client is None:
            return
        payload = stats_payload(stats, self.ctx, uptime_s=time.monotonic() - self._started,
                                outbox_depth=self.outbox_depth, outbox_dropped=self.dropped,
                                outbox_trouble={"refused": self._limit.refused, "lost": self._intake.events_lost,
                                                "held": len(self._queue) if self._intake.trouble.active else 0})
        self._publish(self._client, self.topics.stats, encode(payload), self.cfg.qos_stats, False)

    def _send_summary(self) -> None:
        summary, self._pending_summary = self._pending_summary, None
        if summary is None or self._client is None:
            return
        self._publish(self._client, self.topics.summary, encode(summary), self.cfg.qos_state, True)
