"""``fer-agent demo``: the whole agent on a laptop, offline, in a few seconds.

Builds a short clip at run time from the public-domain astronaut photo that
scikit-image ships (Eileen Collins, NASA), starts an MQTT broker on
127.0.0.1, runs the agent on the clip with the tflite backend and the default
bundle, and prints every event exactly as an MQTT subscriber receives it.

The clip comes from :mod:`agent.synthetic`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from agent.contracts.errors import FerError
from agent.synthetic import write_clip

log = logging.getLogger(__name__)


class PrintingSubscriber:
    """A plain paho subscriber that prints ``topic payload`` for every message, as any client would see it."""

    def __init__(self, host: str, port: int, topic: str, out=sys.stdout) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.out = out
        self.messages: list[tuple[str, dict]] = []
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fer-demo-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise FerError(f"demo: could not subscribe to {topic} on {host}:{port}")

    def _on_message(self, _client, _userdata, msg) -> None:
        text = msg.payload.decode("utf-8", "replace")
        try:
            payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            payload = {"_raw": text}
        with self._lock:
            self.messages.append((msg.topic, payload))
        print(f"{msg.topic} {text}", file=self.out, flush=True)

    def wait_for(self, count: int, timeout: float, topic_suffix: str = "/events") -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                n = sum(1 for t, _ in self.messages if t.endswith(topic_suffix))
            if n >= count:
                return n
            time.sleep(0.05)
        return n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the generated clip (default 6)")
    parser.add_argument("--detector", help="face detector (default: the agent's, detector.type in print-config)")
    parser.add_argument(
        "--all-topics", action="store_true", help="print state, stats and status messages too, not just events"
    )
    parser.add_argument("--broker", metavar="HOST[:PORT]", help="use this broker instead of the embedded one")
    parser.add_argument("--bundle", help="model bundle directory (default: the one inside the package)")
    parser.add_argument("--preview", metavar="PATH", help="also write annotated frames (.mp4 or a directory)")
    parser.add_argument("--keep-clip", metavar="PATH", help="write the generated clip here and keep it")


def demo_command(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig, apply_overrides, parse_broker
    from agent.mqtt.topics import Topics
    from agent.runner import run_agent

    with tempfile.TemporaryDirectory(prefix="fer-demo-") as tmp:
        clip = Path(args.keep_clip) if args.keep_clip else Path(tmp) / "astronaut.mp4"
        write_clip(clip, seconds=args.seconds)
        cfg = AgentConfig()
        apply_overrides(
            cfg, source=str(clip), backend="tflite", bundle=args.bundle, preview=args.preview, detector=args.detector
        )
        cfg.source = replace(cfg.source, realtime=True)  # play the clip as a camera would deliver it
        cfg.tracking = replace(cfg.tracking, update_interval_s=2.0)
        cfg.mqtt.device_id = cfg.mqtt.device_id or "demo"
        cfg.service.health_file = str(Path(tmp) / "health.json")
        cfg.service.state_dir = str(Path(tmp) / "state")
        with contextlib.ExitStack() as stack:
            if args.broker:
                host, port = parse_broker(args.broker)
                port = port or 1883
            else:
                from agent.mqtt.broker import EmbeddedBroker

                host, port = stack.enter_context(EmbeddedBroker())
            cfg.mqtt.host, cfg.mqtt.port = host, port
            topics = Topics(cfg.mqtt.prefix, cfg.mqtt.resolved_device_id())
            topic = f"{topics.base}/#" if args.all_topics else topics.events
            print(
                f"# fer-agent demo: {args.seconds:g} s clip of the astronaut photo, broker {host}:{port}, "
                f"subscribed to {topic}",
                flush=True,
            )
            subscriber = PrintingSubscriber(host, port, topic)
            stack.callback(subscriber.close)
            summary = run_agent(cfg)
            got = subscriber.wait_for(summary.events, timeout=10.0)
        per_frame = summary.stages.get("total", {}).get("mean_ms", 0.0)
        print(
            f"# {summary.frames} frames played in real time ({summary.elapsed_s:.1f} s), "
            f"{per_frame:.1f} ms of agent work per frame, {summary.events} events published, {got} received",
            flush=True,
        )
        if got == 0:
            print("fer-agent demo: error: no events arrived (see the log above)", file=sys.stderr)
            return 1
    return 0
