"""The run loop: one direction through the stages, failed frames counted, stats, systemd hooks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.capture import ArraySource, SourceConfig
from agent.config import AgentConfig
from agent.detectors.haar import HaarDetector
from agent.observers import HealthObserver, PreviewObserver, StatsObserver, WatchdogObserver
from agent.pipeline import NullPublisher
from agent.runner import build_pipeline
from agent.runtimes import InferenceError
from agent.synthetic import grid_frame
from agent.timing import STAGES


class HappyBackend:
    """A classifier that says 'happy' for every face; fails every ``fail_every``-th call when asked to."""

    name = "fake"

    def __init__(self, manifest, fail_every: int = 0):
        self.manifest = manifest
        self.calls = 0
        self.fail_every = fail_every
        self.closed = False

    def infer(self, faces):
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise InferenceError("snpe-net-run exited with 1")
        out = np.full((len(faces), 7), 0.05, np.float32)
        out[:, 3] = 0.7
        return out

    def describe(self):
        return self.name

    def close(self):
        self.closed = True


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a))


def make(manifest, frames, backend=None, observers=(), max_frames=0):
    cfg = AgentConfig()
    cfg.tracking.update_interval_s = 0
    cfg.max_frames = max_frames
    src = ArraySource(SourceConfig(), frames)
    return build_pipeline(cfg, manifest, src, HaarDetector(cfg.detector), backend or HappyBackend(manifest),
                          NullPublisher(), observers=[StatsObserver(cfg.publish.stats_interval_s), *observers])


def test_failed_inference_is_counted_logged_rate_limited_and_the_loop_goes_on(manifest, caplog):
    backend = HappyBackend(manifest, fail_every=3)
    p = make(manifest, [grid_frame(1)] * 30, backend)
    with caplog.at_level(logging.WARNING, logger="agent.pipeline"):
        summary = p.run()
    assert summary.frames == 30 and summary.failed_inferences == 10
    failures = [r for r in caplog.records if "inference failed" in r.message]
    assert 1 <= len(failures) <= 2 and "snpe-net-run exited with 1" in failures[0].message
    # the face neither left nor re-appeared because of the failed frames
    types = [e.type for e in p.publisher.events]
    assert types == ["appeared", "left"]  # 'left' only at the end of the source
    assert backend.closed


def test_events_state_and_stats(manifest):
    frames = [grid_frame(1)] * 10 + [grid_frame(4)] * 10
    p = make(manifest, frames)
    p.run()
    ev = p.publisher.events
    assert [e.type for e in ev].count("appeared") == 5  # the centred face, then four in the corners
    assert {e.face.label for e in ev} == {"happy"}
    assert all(0 <= v <= 1 for e in ev for v in e.face.box)
    assert p.publisher.states >= 2  # on events and at the end
    stats = p.publisher.stats[-1]
    assert set(stats) == {"fps", "frames", "dropped_frames", "source_reopens", "failed_inferences", "faces", "stages"}
    assert stats["frames"] == 20 and stats["faces"] == 4
    assert set(stats["stages"]) == set(STAGES)
    assert all(set(v) == {"mean_ms", "p95_ms"} and v["p95_ms"] >= 0 for v in stats["stages"].values())


def test_no_face_frames_do_not_call_the_backend(manifest):
    backend = HappyBackend(manifest)
    p = make(manifest, [np.zeros((480, 640, 3), np.uint8)] * 5, backend)
    p.run()
    assert backend.calls == 0 and p.frames == 5 and p.publisher.events == []


def test_systemd_and_health_hooks(manifest):
    notifier, health = Recorder(), Recorder()
    p = make(manifest, [grid_frame(1)] * 4, observers=[WatchdogObserver(notifier), HealthObserver(health)])
    p.run()
    names = [n for n, _ in notifier.calls]
    assert names[0] == "ready" and names.count("watchdog") == 4 and "stopping" in names
    assert names.index("stopping") > max(i for i, n in enumerate(names) if n == "watchdog")
    updates = [a for n, a in health.calls if n == "update"]
    assert len(updates) == 4 and updates[-1][1] == 4 and updates[-1][4] == "fake"
    assert ("close", ()) in health.calls


def test_stop_finishes_the_current_frame(manifest):
    def frames():
        for i in range(100):
            if i == 5:
                p.stop()
            yield grid_frame(1)

    p = make(manifest, frames())
    summary = p.run()
    assert summary.frames == 6  # the frame in hand when stop() came is still processed
    assert [e.type for e in p.publisher.events][-1] == "left"


def test_max_frames(manifest):
    p = make(manifest, [grid_frame(1)] * 50, max_frames=7)
    assert p.run().frames == 7


def test_bundle_may_omit_unused_files_but_not_carry_tampered_ones(manifest, tmp_path):
    import shutil

    from agent.contracts.errors import ManifestError
    from agent.contracts.manifest import load_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(manifest.root, bundle)
    (bundle / manifest.files["frozen_graph"].path).unlink()
    (bundle / manifest.files["blazeface_full"].path).unlink()
    loaded = load_manifest(bundle)
    assert not loaded.has("frozen_graph") and loaded.has("tflite_int8")
    with open(bundle / manifest.files["tflite_int8"].path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="sha256 mismatch for files.tflite_int8"):
        load_manifest(bundle)
    assert load_manifest(bundle, verify=False).model_name == manifest.model_name


@pytest.mark.parametrize("name", ["preview.mp4", "frames"])
def test_preview_writes_annotated_video_or_pngs(manifest, tmp_path, name):
    import cv2

    from agent.preview import PreviewWriter

    path = tmp_path / name
    preview = PreviewWriter(path, manifest.labels, fps=10)
    frames = [grid_frame(1)] * 6
    p = make(manifest, frames, observers=[PreviewObserver(preview)])
    p.run()
    if name.endswith(".mp4"):
        cap = cv2.VideoCapture(str(path))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
        ok, first = cap.read()
        cap.release()
    else:
        files = sorted(path.glob("frame_*.png"))
        assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(1, 7)]
        first = cv2.imread(str(files[-1]))
        ok = first is not None
    assert ok and first.shape == (480, 640, 3)
    # something was drawn: the annotated frame differs from the input around the face
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() > 1.0


def test_a_runtime_switch_reaches_the_publisher_through_its_protocol(manifest):
    from agent.contracts.events import PublishContext

    ctx = PublishContext(device_id="d", model_name="m", model_version="1", backend="snpe", agent_version="0",
                         extra={"backend_detail": "snpe cpu"})
    p = make(manifest, [])
    p.publisher = NullPublisher(ctx)
    p.runtime_switched("tflite", "snpe failed 2 consecutive frames")
    assert p.publisher.ctx.backend == "tflite" and ctx.backend == "snpe"  # a new context, the old one untouched
    assert p.publisher.ctx.extra == {"backend_detail": "fake", "backend_reason": "fallback: snpe failed 2 consecutive "
                                     "frames"}


class _NotifySocket:
    """A stand-in for systemd's notify socket: a real AF_UNIX datagram socket; records (time, message)."""

    def __init__(self, path):
        import socket
        import threading
        import time

        self.messages: list[tuple[float, str]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self._stop = threading.Event()

        def drain():
            while not self._stop.is_set():
                try:
                    self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
                except OSError:
                    continue

        self.thread = threading.Thread(target=drain, daemon=True)
        self.thread.start()

    def pings(self) -> list[float]:
        return [t for t, m in self.messages if m == "WATCHDOG=1"]

    def close(self):
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


def _run_for(pipeline, seconds: float, meanwhile=lambda: None):
    import threading
    import time

    t = threading.Thread(target=pipeline.run)
    t.start()
    time.sleep(seconds)
    result = meanwhile()
    pipeline.stop()
    t.join(10)
    assert not t.is_alive()
    return result


def test_a_source_being_retried_keeps_the_watchdog_fed_and_says_why(manifest, tmp_path):
    """A camera that cannot be opened for minutes must not get the unit killed: the loop is alive."""
    import cv2

    from agent.capture import LiveSource
    from agent.health import HealthReporter, check_health
    from agent.notify import Notifier

    systemd = _NotifySocket(tmp_path / "notify.sock")
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"})
    cfg = AgentConfig()
    src = LiveSource(SourceConfig(reopen_initial_s=0.05, reopen_max_s=0.2), "camera /dev/video9",
                     lambda: cv2.VideoCapture(str(tmp_path / "gone.mp4")))
    src.open()
    health = HealthReporter(tmp_path / "health.json", interval_s=0.2)
    p = build_pipeline(cfg, manifest, src, HaarDetector(cfg.detector), HappyBackend(manifest), NullPublisher(),
                       observers=[WatchdogObserver(notifier), HealthObserver(health)])
    try:
        ok, message = _run_for(p, 3.5, lambda: check_health(tmp_path / "health.json", 30))
    finally:
        src.close()
        systemd.close()
    assert len(systemd.pings()) >= 2, systemd.messages  # the old loop pinged only with a frame: none here
    statuses = [m for _, m in systemd.messages if m.startswith("STATUS=source unreachable since")]
    assert statuses and "retrying (attempt" in statuses[-1] and "camera /dev/video9" in statuses[-1]
    assert not ok and "source unreachable since" in message and "retrying (attempt" in message, message


def test_a_hung_loop_stops_feeding_the_watchdog(manifest, tmp_path):
    """The other half: a stage that hangs sends no ping for as long as it hangs (systemd then kills it)."""
    import time

    from agent.notify import Notifier

    class Hangs(HappyBackend):
        def infer(self, faces):
            if self.calls == 20:  # a second into the run, after some pings
                time.sleep(1.5)
            return super().infer(faces)

    systemd = _NotifySocket(tmp_path / "notify.sock")
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"})
    p = make(manifest, [grid_frame(1)] * 60, backend=Hangs(manifest), observers=[WatchdogObserver(notifier)])
    p.source.cfg.fps_cap = 20  # frames keep coming for about three seconds
    try:
        p.run()
    finally:
        systemd.close()
    pings = systemd.pings()
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert len(pings) >= 3 and max(gaps) >= 1.4, gaps  # nothing while the stage hung
    assert sorted(gaps)[-2] < 0.5  # otherwise a ping at least every 0.1 s per turn
