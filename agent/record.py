"""``fer-agent record``: what a device published, as JSON Lines, for ``fer-agent report`` or any tool.

Subscribes to ``<prefix>/<device_id>/#`` (every device when ``--device-id`` is
left out) and writes one line per message::

    {"received": "2026-11-22T06:46:40.130Z", "topic": "fer/demo/events", "retained": false, "payload": {...}}

``payload`` is the decoded JSON (the status topic's plain ``online``/``offline``
stays a string). Lines are flushed as they come, so a recording stopped by a
signal or a power cut keeps everything before it. It stops on SIGINT/SIGTERM,
after ``--seconds``, or with ``--until-offline`` when the device goes offline
(a live ``offline``, not one the broker kept from an earlier run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from agent.contracts.errors import ConfigError, FerError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="MQTT broker to subscribe to")
    p.add_argument("--device-id", help="the device to record (default: every device under the prefix)")
    p.add_argument("--prefix", default="fer", help="topic prefix (mqtt.prefix, default fer)")
    p.add_argument("-o", "--output", required=True, metavar="EVENTS.jsonl", help="file to write ('-' = stdout)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (0 = no limit)")
    p.add_argument("--until-offline", action="store_true", help="stop when the device publishes offline")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    p.add_argument("--ca-file", help="connect with TLS, trusting this CA file")


def _decode(payload: bytes) -> Any:
    text = payload.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class Recorder:
    """A paho subscriber that writes every message it gets as one JSON line."""

    def __init__(self, out: IO[str], topic: str, until_offline: bool) -> None:
        self.out = out
        self.topic = topic
        self.until_offline = until_offline
        self.count = 0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self.error: str | None = None
        self._lock = threading.Lock()

    def on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.error = f"broker refused the connection: {reason}"
            self.done.set()
            return
        client.subscribe(self.topic, qos=1)

    def on_subscribe(self, *args: Any) -> None:
        self.subscribed.set()

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from agent.mqtt.payloads import iso_utc

        line = json.dumps({"received": iso_utc(time.time()), "topic": msg.topic, "retained": bool(msg.retain),
                           "payload": _decode(msg.payload)}, ensure_ascii=False)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
            self.count += 1
        if self.until_offline and msg.topic.endswith("/status") and msg.payload == b"offline" and not msg.retain:
            self.done.set()


def record_command(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from agent.config import parse_broker

    host, port = parse_broker(args.broker)
    port = port or (8883 if args.ca_file else 1883)
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise ConfigError(f"--password-env: environment variable {args.password_env} is not set")
    topic = f"{args.prefix}/{args.device_id or '+'}/#"
    out_path = None if args.output == "-" else Path(args.output)
    try:
        out = sys.stdout if out_path is None else open(out_path, "a", encoding="utf-8")
    except OSError as exc:
        raise FerError(f"{args.output}: cannot write: {exc.strerror}") from None
    rec = Recorder(out, topic, args.until_offline)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    if args.username:
        client.username_pw_set(args.username, password)
    if args.ca_file:
        client.tls_set(ca_certs=args.ca_file)
    client.on_connect, client.on_subscribe, client.on_message = rec.on_connect, rec.on_subscribe, rec.on_message
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise FerError(f"--broker: cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    client.loop_start()
    try:
        if not rec.subscribed.wait(15) and not rec.done.is_set():
            raise FerError(f"--broker: no subscription to {topic} on {host}:{port} within 15 s")
        print(f"record: subscribed to {topic} on {host}:{port}, writing {args.output}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
        while not (stop.is_set() or rec.done.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
        if out_path is not None:
            out.close()
    if rec.error:
        raise FerError(f"--broker {host}:{port}: {rec.error}")
    print(f"record: {rec.count} message(s) written to {args.output}", file=sys.stderr, flush=True)
    return 0
