"""Developer tool: a synthetic event generator that exercises a broker and a dashboard without a camera or a model.

    python -m agent.emit --broker 127.0.0.1:1883 --device-id demo --events 100 --rate 10

It uses the real :class:`~agent.mqtt.publisher.MqttPublisher` (outbox, Last
Will, discovery), so it is also what the process-level tests drive: kill it
and the broker publishes ``offline``; stop the broker while it runs and the
queued events arrive after the broker returns. Progress goes to stdout as one
JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent.contracts.errors import FerError
from agent.contracts.events import Event, FaceState, PublishContext, StateSnapshot
from agent.contracts.labels import LABELS
from agent.mqtt.config import AuthConfig, MqttConfig, TlsConfig
from agent.mqtt.publisher import MqttPublisher


def synthetic_event(frame: int, t: float | None = None) -> Event:
    """A deterministic event for frame ``frame``: label cycles through the seven emotions."""
    label = LABELS[frame % len(LABELS)]
    rest = 0.3 / (len(LABELS) - 1)
    probs = {name: (0.7 if name == label else rest) for name in LABELS}
    face = FaceState(face_id=frame % 3, box=(0.25, 0.2, 0.3, 0.4), label=label, confidence=0.7, probabilities=probs)
    return Event(type=("appeared", "changed", "update", "left")[frame % 4], face=face, frame_number=frame,
                 capture_time=time.time() if t is None else t,
                 previous_label=LABELS[(frame - 1) % len(LABELS)] if frame % 4 == 1 else None)


def synthetic_state(frame: int, t: float | None = None) -> StateSnapshot:
    e = synthetic_event(frame, t)
    return StateSnapshot(faces=[e.face], dominant=e.face.label, frame_number=frame, capture_time=e.capture_time)


def _say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.emit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", required=True, help="host:port")
    ap.add_argument("--device-id", default="emit")
    ap.add_argument("--prefix", default="fer")
    ap.add_argument("--state-dir", help="outbox directory (default: a new temporary directory)")
    ap.add_argument("--events", type=int, default=10, help="events to publish (0 = none)")
    ap.add_argument("--first-frame", type=int, default=0)
    ap.add_argument("--rate", type=float, default=10.0, help="events per second (0 = as fast as possible)")
    ap.add_argument("--state-every", type=int, default=0, help="also publish state every N events (0 = never)")
    ap.add_argument("--hold", action="store_true", help="after the events, stay connected until SIGTERM/SIGINT")
    ap.add_argument("--linger", type=float, default=0.0,
                    help="after the events, wait up to this many seconds for the outbox to empty")
    ap.add_argument("--drain-timeout", type=float, default=5.0, help="seconds to drain the outbox on exit")
    ap.add_argument("--wait-connected", type=float, default=0.0,
                    help="wait up to this many seconds for the first connection before emitting")
    ap.add_argument("--username")
    ap.add_argument("--password-env", help="environment variable holding the password")
    ap.add_argument("--ca-file", help="enable TLS with this CA file")
    ap.add_argument("--print-accepted", action="store_true",
                    help='print {"accepted": FRAME} once publish_event has returned for each event (kill -9 tests)')
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    host, _, port = args.broker.rpartition(":")
    try:
        cfg = MqttConfig(host=host, port=int(port), device_id=args.device_id, prefix=args.prefix,
                         auth=AuthConfig(username=args.username, password_env=args.password_env),
                         tls=TlsConfig(enabled=bool(args.ca_file), ca_file=args.ca_file))
        cfg.outbox.drain_timeout_s = args.drain_timeout
        state_dir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="fer-emit-"))
        ctx = PublishContext(device_id=args.device_id, model_name="synthetic", model_version="0",
                             backend="none", agent_version="emit")
        pub = MqttPublisher(cfg, ctx, state_dir)
        pub.start()
    except (FerError, ValueError) as exc:
        print(f"emit: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _say(started=True, outbox_depth=pub.outbox_depth)
    deadline = time.monotonic() + args.wait_connected
    while not pub.connected and time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.02)
    if pub.connected:
        _say(connected=True)

    period = 1.0 / args.rate if args.rate > 0 else 0.0
    t0 = time.monotonic()
    emitted = 0
    for i in range(args.events):
        if stop.is_set():
            break
        frame = args.first_frame + i
        pub.publish_event(synthetic_event(frame))
        if args.print_accepted:
            _say(accepted=frame)
        if args.state_every and (i + 1) % args.state_every == 0:
            pub.publish_state(synthetic_state(frame))
        emitted += 1
        if period:
            delay = t0 + (i + 1) * period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    _say(emitted=emitted, first_frame=args.first_frame, connected=pub.connected)
    linger_until = time.monotonic() + args.linger
    while pub.outbox_depth > 0 and time.monotonic() < linger_until and not stop.is_set():
        time.sleep(0.05)
    if args.hold:
        while not stop.wait(0.1):
            pass
    pub.close()
    _say(closed=True, outbox_depth=pub.outbox_depth, dropped=pub.dropped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
