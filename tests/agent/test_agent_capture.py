"""Capture stage on generated media: video, image, directory, live reopen, pacing, errors."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.capture import LiveSource, VideoFileSource, open_source, source_kind
from agent.config import SourceConfig
from agent.contracts.errors import FerError


def make_video(path: Path, n: int = 20, fps: float = 25.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    assert w.isOpened()
    for i in range(n):
        frame = np.full((120, 160, 3), 0, np.uint8)
        cv2.putText(frame, str(i), (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        frame[:, :, 2] = (i * 5) % 256
        w.write(frame)
    w.release()
    return path


def read_all(source, limit: int = 1000):
    frames = []
    while len(frames) < limit:
        f = source.read()
        if f is None:
            if source.ended:
                break
            continue
        frames.append(f)
    return frames


@pytest.mark.parametrize(
    "uri, kind",
    [
        ("0", "camera"),
        ("/dev/video2", "camera"),
        ("rtsp://cam.local/stream", "url"),
        ("http://x/mjpg", "url"),
        ("qtiqmmfsrc ! video/x-raw,format=NV12 ! videoconvert ! appsink", "gstreamer"),
        ("clip.mp4", "video"),
        ("face.JPG", "image"),
    ],
)
def test_source_kind(uri, kind):
    assert source_kind(uri) == kind


def test_video_file_every_frame_then_clean_end(tmp_path):
    src = open_source(SourceConfig(uri=str(make_video(tmp_path / "v.mp4", 20))))
    frames = read_all(src)
    src.close()
    assert len(frames) == 20 and src.ended and src.dropped == 0
    assert frames[0].image.shape == (120, 160, 3)
    # media time: 25 frames/s apart, whatever the reading speed
    assert frames[10].capture_time - frames[0].capture_time == pytest.approx(0.4, abs=1e-6)
    assert src.read() is None


def test_video_file_loop(tmp_path):
    src = open_source(SourceConfig(uri=str(make_video(tmp_path / "v.mp4", 5)), loop=True))
    assert len(read_all(src, limit=13)) == 13 and not src.ended
    src.close()


def test_realtime_file_skips_frames_when_behind(tmp_path):
    src = open_source(SourceConfig(uri=str(make_video(tmp_path / "v.mp4", 50, fps=100.0)), realtime=True))
    got = 0
    while src.read() is not None:
        got += 1
        time.sleep(0.03)  # a pipeline three times slower than the file
    src.close()
    assert src.dropped > 0 and got + src.dropped == 50


def test_fps_cap(tmp_path):
    src = open_source(SourceConfig(uri=str(make_video(tmp_path / "v.mp4", 6)), fps_cap=20.0))
    t0 = time.monotonic()
    waits = []
    while src.read() is not None:
        waits.append(src.last_wait)
    assert len(waits) == 6
    assert time.monotonic() - t0 >= 5 / 20.0 - 0.01
    assert all(w > 0 for w in waits[1:])  # pacing is reported as waiting, not as capture work


def test_image_file_and_directory(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((50, 60, 3), i * 40, np.uint8))
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((50, 60), 7, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(SourceConfig(uri=str(tmp_path)))
    frames = read_all(src)
    assert len(frames) == 4  # broken.jpg skipped with a warning, notes.txt ignored
    assert all(f.image.shape == (50, 60, 3) for f in frames)  # grey images come out BGR too
    single = open_source(SourceConfig(uri=str(tmp_path / "img1.png")))
    (frame,) = read_all(single)
    assert int(frame.image[0, 0, 0]) == 40


@pytest.mark.parametrize(
    "uri, message",
    [
        ("/nonexistent/clip.mp4", "source.uri: /nonexistent/clip.mp4: no such file"),
        ("/nonexistent/dir/img.png", "no such file or directory"),
        ("/dev/video99", "source.uri: /dev/video99: no such camera device"),
    ],
)
def test_bad_sources_name_the_key(uri, message):
    with pytest.raises(FerError, match=message):
        open_source(SourceConfig(uri=uri))


def test_not_a_video_is_an_error(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("hello")
    with pytest.raises(FerError, match="OpenCV cannot open this file as video"):
        open_source(SourceConfig(uri=str(bad)))


def test_dropped_live_source_reopens_and_keeps_delivering(tmp_path):
    """A real file read as a live source: each end of file is a drop; the source reopens and goes on."""
    video = make_video(tmp_path / "v.mp4", 10)
    src = open_source(SourceConfig(uri=str(video), live=True, reopen_initial_s=0.01, reopen_max_s=0.05))
    assert isinstance(src, LiveSource)
    got = 0
    deadline = time.monotonic() + 10
    while src.reopens < 2 and time.monotonic() < deadline:
        if src.read(timeout=0.2) is not None:
            got += 1
    src.close()
    assert src.reopens >= 2
    assert src.frames_read > 10 and got > 0
    assert src.dropped == src.frames_read - got or src.dropped >= src.frames_read - got - 1


class FlakyCapture:
    """Stands in for cv2.VideoCapture of a camera that delivers 3 frames, then fails."""

    def __init__(self, ok: bool) -> None:
        self.ok, self.left = ok, 3

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.ok

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        time.sleep(0.005)
        return True, np.zeros((8, 8, 3), np.uint8)

    def set(self, *a):
        return True

    def get(self, *a):
        return 30.0

    def release(self):
        pass


def test_live_source_backs_off_while_the_device_is_gone():
    opens = []

    def opener():
        opens.append(time.monotonic())
        return FlakyCapture(ok=len(opens) not in (2, 3))  # second and third attempts fail

    src = LiveSource(SourceConfig(reopen_initial_s=0.05, reopen_max_s=1.0), "flaky camera", opener)
    src.open()
    deadline = time.monotonic() + 5
    while src.reopens < 1 and time.monotonic() < deadline:
        src.read(timeout=0.1)
    src.close()
    assert src.reopens >= 1 and len(opens) >= 4
    gaps = np.diff(opens[:4])  # open ok, 3 frames, drop; wait 0.05 -> fail; wait 0.1 -> fail; wait 0.2 -> ok
    assert gaps[2] > gaps[1] * 1.5  # the wait doubled after a failed attempt


def test_video_source_counts_decoded_frames(tmp_path):
    src = VideoFileSource(SourceConfig(), str(make_video(tmp_path / "v.mp4", 7)))
    src.open()
    assert src.nominal_fps == pytest.approx(25.0)
    assert len(read_all(src)) == 7


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server for tmp_path (a stand-in for an IP camera's HTTP stream)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_url_source_is_live_and_reopens(tmp_path, http_server):
    make_video(tmp_path / "cam.mp4", 10)
    src = open_source(SourceConfig(uri=f"{http_server}/cam.mp4", reopen_initial_s=0.01, reopen_max_s=0.05))
    assert isinstance(src, LiveSource) and src.description.startswith("stream http://127.0.0.1")
    frames = []
    deadline = time.monotonic() + 20
    while (src.reopens < 1 or not frames) and time.monotonic() < deadline:
        f = src.read(timeout=0.2)
        if f is not None:
            frames.append(f)
    src.close()
    assert frames and frames[0].image.shape == (120, 160, 3)
    assert src.reopens >= 1  # the stream ended (a dropped camera) and was opened again


def test_url_passwords_stay_out_of_logs():
    from agent.capture import _hide_password

    assert _hide_password("rtsp://admin:s3cret@10.0.0.2/live") == "rtsp://admin:***@10.0.0.2/live"
    assert _hide_password("rtsp://10.0.0.2/live") == "rtsp://10.0.0.2/live"


def test_gstreamer_without_gstreamer_support_is_a_clear_error():
    from agent.capture import has_gstreamer

    if has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(FerError, match="GStreamer pipeline needs OpenCV built with GStreamer"):
        open_source(SourceConfig(uri="videotestsrc num-buffers=5 ! videoconvert ! appsink"))


def test_directory_loop(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 10, 3), i, np.uint8))
    src = open_source(SourceConfig(uri=str(tmp_path), loop=True))
    assert [int(f.image[0, 0, 0]) for f in read_all(src, limit=5)] == [0, 1, 0, 1, 0]


def test_realtime_file_hands_each_frame_over_at_its_own_time(tmp_path, monkeypatch):
    """Frame k is delivered at t0 + k/fps, not one frame late (that added 1/fps to every event's latency)."""
    import agent.capture as capture

    clock = {"t": 1000.0}
    monkeypatch.setattr(capture.time, "monotonic", lambda: clock["t"])
    src = open_source(SourceConfig(uri=str(make_video(tmp_path / "v.mp4", 5, fps=10.0)), realtime=True))
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock["t"] += seconds

    monkeypatch.setattr(src, "_sleep", fake_sleep)
    frames = [src.read() for _ in range(3)]
    assert all(f is not None for f in frames)
    assert slept == [0.1, 0.1]  # frame 0 at once, then one period per frame (decoding takes no fake time)
    assert frames[1].capture_time - frames[0].capture_time == pytest.approx(0.1)


def _damaged_video(tmp_path: Path) -> Path:
    """A 90-frame MJPEG AVI whose middle is overwritten: OpenCV reads 25 frames, then nothing."""
    import os

    path = tmp_path / "damaged.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for i in range(90):
        frame = np.full((120, 160, 3), i * 2, np.uint8)
        cv2.putText(frame, str(i), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255))
        w.write(frame)
    w.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 10] + os.urandom(len(data) // 5) + data[len(data) // 2:])
    return path


@pytest.mark.parametrize("loop", [False, True])
def test_a_read_error_before_the_end_of_a_file_is_a_warning_with_the_frame_count(tmp_path, caplog, loop):
    path = _damaged_video(tmp_path)
    src = open_source(SourceConfig(uri=str(path), loop=loop))
    frames = read_all(src, limit=200)
    src.close()
    assert len(frames) == 200 if loop else 0 < len(frames) < 90
    lines = [r.getMessage() for r in caplog.records if "damaged or truncated" in r.getMessage()]
    assert len(lines) == 1, lines  # once, also when looping
    assert "of 90 (the file is damaged or truncated)" in lines[0] and str(path) in lines[0]
    assert ("loop: true replays only these" in lines[0]) == loop


def test_a_whole_file_ends_without_a_warning(tmp_path, caplog):
    src = open_source(SourceConfig(uri=str(make_video(tmp_path / "ok.mp4", n=30))))
    assert len(read_all(src)) == 30
    assert "damaged" not in caplog.text
