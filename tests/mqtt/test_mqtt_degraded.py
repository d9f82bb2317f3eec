"""Degraded states of the publisher, with real parts: a full file system (tmpfs) and a refusing mosquitto.

Nothing accepted is lost silently: a disk that cannot be written holds events
in memory (bounded, counted) and says so once; a message the broker refuses is
moved aside and counted instead of looping the connection.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from agent.contracts.events import StateSnapshot
from agent.emit import synthetic_event, synthetic_state
from agent.health import HealthReporter, check_health
from agent.mqtt.discovery import discovery_messages
from agent.mqtt.refusal import packet_size

_TMPFS_MIB = 4  # room for the queue database and the journal's two 1 MiB segments, then filled up


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (root only: CI runs the suite as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the CI runs the suite as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={_TMPFS_MIB}m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _events(sub, device: str) -> list[dict]:
    return [m.json() for m in sub.on(f"fer/{device}/events")]


def test_a_full_disk_holds_events_says_so_once_and_delivers_them_all_in_order_later(
        mosquitto, make_publisher, mqtt_collector, small_fs, caplog, tmp_path) -> None:
    caplog.set_level(logging.INFO, logger="agent.mqtt")
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/full/#", client_id="sub-full", persistent=True)
    mosquitto.stop()  # broker down too: everything must wait on disk or in memory
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="full", state_dir=small_fs / "state")
    for i in range(20):
        pub.publish_event(synthetic_event(i))
    wait_until(lambda: pub._outbox.depth == 20, what="the first events on disk")
    filler = _fill(small_fs)
    for i in range(20, 400):
        pub.publish_event(synthetic_event(i))
        if i % 20 == 0:
            pub.publish_state(synthetic_state(i))
    wait_until(lambda: pub._intake.trouble.active, what="the full disk noticed")
    problems = pub.problems
    assert any(f"{small_fs / 'state'}" in p and "No space left on device (ENOSPC)" in p for p in problems), problems
    # health says degraded (still exit 0: a rollback would not free the disk)
    health = tmp_path / "health.json"
    reporter = HealthReporter(health)
    reporter.update(1.0, 10, pub.connected, pub.outbox_depth, "tflite", "running", problems)
    ok, message = check_health(health, 1e12, broker_grace_s=1e9)
    assert ok and "cannot write the outbox" in message and "ENOSPC" in message, message
    assert pub.outbox_depth >= 400  # held messages count as waiting
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # one line, not one per batch or per second
    assert "No space left on device (ENOSPC)" in lines[0].getMessage() and str(small_fs) in lines[0].getMessage()
    assert lines[0].exc_info is None and "internal error" not in caplog.text

    filler.unlink()  # space again, then the broker
    wait_until(lambda: not pub._intake.trouble.active, timeout=10, what="the held events written")
    assert "writable again" in caplog.text
    mosquitto.start()
    wait_until(lambda: len(_events(sub, "full")) >= 400, timeout=30, what="every event delivered")
    events = _events(sub, "full")
    assert [e["frame"] for e in events] == list(range(400))  # exactly once, in order
    assert [e["seq"] for e in events] == list(range(1, 401))  # no number reused, no gap: nothing was lost
    assert pub.dropped == 0 and pub.problems == []
    wait_until(lambda: pub.outbox_depth == 0, what="the queue empty: no phantom rows left from failed writes")
    pub.close(timeout=2.0)


def test_past_the_memory_bound_the_loss_is_a_visible_seq_gap_and_a_counter(
        mosquitto, make_publisher, mqtt_collector, small_fs) -> None:
    from agent.mqtt.config import OutboxConfig

    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/gap/#", client_id="sub-gap", persistent=True)
    mosquitto.stop()
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="gap", state_dir=small_fs / "state",
                         outbox=OutboxConfig(memory_queue=100))
    for i in range(10):
        pub.publish_event(synthetic_event(i))
    wait_until(lambda: pub._outbox.depth == 10, what="the first events on disk")
    filler = _fill(small_fs)
    for i in range(10, 400):
        pub.publish_event(synthetic_event(i))
    wait_until(lambda: pub._intake.trouble.active, what="the full disk noticed")
    lost = pub._intake.events_lost
    assert lost > 0 and any(f"{lost} event(s) lost" in p for p in pub.problems), pub.problems
    filler.unlink()
    mosquitto.start()
    wait_until(lambda: len(_events(sub, "gap")) >= 400 - lost, timeout=30, what="what was kept delivered")
    events = _events(sub, "gap")
    seqs = [e["seq"] for e in events]
    assert len(events) == 400 - lost and seqs == sorted(set(seqs))
    assert seqs[-1] == 400, "the lost events' numbers stay unused: the gap shows the loss"
    # Every number not delivered is a counted loss. Where the gap falls depends on timing: the oldest held events
    # go first, and under load the first ten may still be held (not yet on disk) when the disk fills.
    assert seqs[-1] - len(seqs) == lost
    pub.publish_stats({"fps": 1.0})
    stats = sub.wait_count("fer/gap/stats", 1)[0].json()
    assert stats["outbox"]["lost"] == lost
    pub.close(timeout=2.0)


def _crowd(frame: int, faces: int) -> StateSnapshot:
    """A state with many faces: a retained message that grows past a small broker limit."""
    one = synthetic_state(frame)
    return StateSnapshot(faces=one.faces * faces, dominant=one.dominant, frame_number=frame,
                         capture_time=one.capture_time)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_message_the_broker_refuses_is_moved_aside_and_the_queue_moves_on(
        mosquitto_factory, make_publisher, mqtt_collector, caplog, protocol) -> None:
    """mosquitto ``max_packet_size 600``: events (~480 bytes) pass; the 800-byte discovery config and a state
    with ten faces do not. MQTT 5 knows the limit from CONNACK (no reconnect at all); 3.1.1 learns it from the
    broker closing the connection twice in a row per refused size (two reconnects each), then no more."""
    caplog.set_level(logging.INFO, logger="agent.mqtt")
    broker = mosquitto_factory.start(extra_config=["max_packet_size 600"])
    sub = mqtt_collector(broker.host, broker.port, ["fer/lim/#", "homeassistant/#"])
    pub = make_publisher(broker.host, broker.port, device_id="lim", protocol=protocol)
    pub.publish_event(synthetic_event(1))
    pub.publish_state(_crowd(1, 10))
    pub.publish_event(synthetic_event(2))
    events = sub.wait_count("fer/lim/events", 2, timeout=20)
    assert [m.json()["frame"] for m in events] == [1, 2]  # the queue moved on past the refused state
    # The state and every discovery config over the limit (the dominant-emotion one; the audience sensors')
    too_big = 1 + sum(packet_size(t, p, 1, protocol == "5") > 600 for t, p in discovery_messages(pub.topics, pub.ctx))
    assert too_big >= 2
    wait_until(lambda: pub._limit.refused >= too_big, timeout=10, what="the refused state and discovery counted")
    assert pub._limit.refused == too_big
    flips = len(sub.on("fer/lim/status"))
    time.sleep(2.0)
    assert len(sub.on("fer/lim/status")) == flips, "no reconnect loop once the limit is known"
    # 3.1.1 learns each refused size from two closes in a row: a few status flips per refused message
    assert flips <= (1 if protocol == "5" else 2 + 4 * too_big), [m.text for m in sub.on("fer/lim/status")]
    assert pub.connected
    assert [m for m in sub.on("fer/lim/state")] == []  # the refused state was not retried
    assert any(f"broker refused {too_big} message(s)" in p for p in pub.problems), pub.problems
    refused_lines = [r.getMessage() for r in caplog.records if "does not take a" in r.getMessage()]
    assert len(refused_lines) == 1, refused_lines  # logged once, with size and limit
    limit = "Maximum Packet Size is 600 bytes" if protocol == "5" else "closed the connection on a"
    assert limit in refused_lines[0] and "-byte message" in refused_lines[0]
    pub.publish_stats({"fps": 1.0})
    stats = sub.wait_count("fer/lim/stats", 1)[0].json()
    assert stats["outbox"]["refused"] == too_big and stats["outbox"]["depth"] == 0


def test_a_full_disk_at_start_holds_the_recovered_journal_and_stores_it_when_space_returns(
        mosquitto, make_publisher, mqtt_collector, small_fs) -> None:
    """Killed with events only in the journal, restarted on a full disk: the agent starts (no error), holds
    them in order, and they are stored and delivered once space returns."""
    state = small_fs / "state"
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/boot/#", client_id="sub-boot", persistent=True)
    mosquitto.stop()
    crashed = make_publisher(mosquitto.host, mosquitto.port, device_id="boot", start=False, state_dir=state)
    for i in range(30):
        crashed.publish_event(synthetic_event(i))  # journaled only: the process "dies" before ingesting
    filler = _fill(small_fs)
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="boot", state_dir=state)
    assert pub._intake.trouble.active and len(pub._queue) == 30
    assert any("No space left on device (ENOSPC)" in p for p in pub.problems), pub.problems
    filler.unlink()
    mosquitto.start()
    wait_until(lambda: len(_events(sub, "boot")) >= 30, timeout=30, what="the recovered events delivered")
    events = _events(sub, "boot")
    assert [e["frame"] for e in events] == list(range(30)) and [e["seq"] for e in events] == list(range(1, 31))
