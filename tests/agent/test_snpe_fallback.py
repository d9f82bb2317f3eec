"""Switching from a failing runtime to the fallback after K consecutive failures."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from snpe_testing import (
    TINY_BUNDLE,
    add_dlcs,
    copy_bundle,
    litert_predict,
    make_fake_sdk,
    use_fake_sdk,
)

from agent.classify import FaceClassifier
from agent.contracts.errors import FerError
from agent.contracts.manifest import load_manifest
from agent.runtimes.base import InferenceError, Runtime
from agent.runtimes.fallback import FallbackRuntime, maybe_wrap
from agent.runtimes.snpe import SnpeConfig, SnpeRuntime


class Scripted(Runtime):
    """Fails on the frames whose number is in ``fail``; answers ``value`` otherwise."""

    def __init__(self, name: str, value: float, fail: set[int] | None = None, config=None) -> None:
        super().__init__(FaceClassifier.model(load_manifest(TINY_BUNDLE)), config)
        self.name, self.value, self.fail, self.frames, self.closed = name, value, fail or set(), 0, False

    def run(self, batch):
        self.frames += 1
        if self.frames in self.fail:
            raise InferenceError(f"{self.name} broke on frame {self.frames}\nsecond line")
        return [np.full((len(batch), 7), self.value, np.float32)]

    def close(self):
        self.closed = True


X = np.zeros((2, 48, 48, 1), np.float32)


def run_frames(runtime: Runtime, n: int) -> list[str]:
    """'ok:<value>' or 'fail' per frame, like the pipeline counting failed frames."""
    out = []
    for _ in range(n):
        try:
            out.append(f"ok:{runtime.run(X)[0][0, 0]:g}")
        except InferenceError:
            out.append("fail")
    return out


def test_switches_after_k_consecutive_failures_and_says_so(caplog):
    primary = Scripted("snpe", 1.0, fail=set(range(2, 100)))
    made = []
    fb = FallbackRuntime(
        primary,
        lambda: made.append(1) or Scripted("tflite", 2.0),
        after=3,
        on_switch=lambda name, why: made.append((name, why)),
    )
    with caplog.at_level(logging.WARNING, logger="agent.runtimes.fallback"):
        results = run_frames(fb, 6)
    # frame 1 ok, frames 2-3 fail, frame 4 is the 3rd failure: switch, and the fallback answers it
    assert results == ["ok:1", "fail", "fail", "ok:2", "ok:2", "ok:2"]
    assert fb.switched and fb.active.name == "tflite" and fb.name == "tflite" and primary.closed
    assert (
        made[0] == 1 and made[1][0] == "tflite" and "snpe failed 3 consecutive frames" in made[1][1]
    )  # built once, told
    assert "snpe broke on frame 4" in fb.switch_reason and "second line" not in fb.switch_reason
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"switching the classifier from the snpe runtime to tflite: {fb.switch_reason}"]
    assert "[fallback: snpe failed 3 consecutive frames" in fb.describe()
    assert fb.total_failures == 3


def test_a_success_resets_the_count():
    primary = Scripted("snpe", 1.0, fail={1, 2, 4, 5, 7, 8})
    fb = FallbackRuntime(primary, lambda: Scripted("tflite", 2.0), after=3)
    assert run_frames(fb, 9) == ["fail", "fail", "ok:1", "fail", "fail", "ok:1", "fail", "fail", "ok:1"]
    assert not fb.switched and fb.total_failures == 6 and fb.consecutive_failures == 0
    assert "falls back to tflite after 3" in fb.describe()


def test_fallback_that_cannot_start_keeps_primary(caplog):
    def broken():
        raise FerError("no TFLite runtime installed")

    primary = Scripted("snpe", 1.0, fail={1, 2, 3})
    fb = FallbackRuntime(primary, broken, after=2)
    with caplog.at_level(logging.ERROR, logger="agent.runtimes.fallback"):
        assert run_frames(fb, 4) == ["fail", "fail", "fail", "ok:1"]
    assert not fb.switched and any("cannot start" in r.getMessage() for r in caplog.records)


def test_maybe_wrap_reads_the_config():
    p = Scripted("snpe", 1.0, config=SnpeConfig(fallback="none"))
    assert maybe_wrap(p, lambda n: Scripted(n, 2.0)) is p
    p = Scripted("snpe", 1.0, config=SnpeConfig(fallback="tflite", fallback_after=4))
    w = maybe_wrap(p, lambda n: Scripted(n, 2.0))
    assert isinstance(w, FallbackRuntime) and w.after == 4 and w.fallback_name == "tflite"
    assert maybe_wrap(Scripted("snpe", 1.0, config=object()), lambda n: Scripted(n, 2.0)).name == "snpe"  # no fields


def stand_in_bundle(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A bundle with stand-in DLCs and the fake SDK on $SNPE_ROOT; snpe-net-run fails while the returned file exists."""
    sdk = make_fake_sdk(tmp_path / "sdk")
    bundle = add_dlcs(copy_bundle(tmp_path / "bundle"), sdk)
    use_fake_sdk(monkeypatch, sdk)
    fail_file = tmp_path / "dsp-broken"
    monkeypatch.setenv("SNPE_STAND_IN_FAIL_FILE", str(fail_file))
    return bundle, fail_file


def test_snpe_to_real_tflite_backend(tmp_path, monkeypatch):
    """The real thing: snpe-net-run stand-in failing K times, then LiteRT answers with the model's numbers."""
    tflite_mod = pytest.importorskip("agent.runtimes.tflite")
    bundle, fail_file = stand_in_bundle(tmp_path, monkeypatch)
    manifest = load_manifest(bundle)
    cfg = SnpeConfig(target="cpu", fallback_after=2, work_dir=str(tmp_path / "w"))
    model = FaceClassifier.model(manifest)
    fb = FaceClassifier(
        manifest,
        maybe_wrap(
            SnpeRuntime(model, cfg),
            lambda name: tflite_mod.TFLiteRuntime(model, tflite_mod.TFLiteConfig(model="float")),
        ),
    )
    x = np.random.default_rng(5).normal(size=(2, 48, 48, 1)).astype(np.float32)
    want = litert_predict(bundle / "model.tflite", x)
    np.testing.assert_allclose(fb.infer(x), want, rtol=1e-5, atol=1e-6)  # snpe works
    fail_file.touch()
    with pytest.raises(InferenceError, match="exited with code 1"):
        fb.infer(x)
    np.testing.assert_allclose(fb.infer(x), want, rtol=1e-5, atol=1e-6)  # 2nd failure: switched, answered
    assert fb.runtime.switched and fb.runtime.active.name == "tflite" and fb.name == "tflite"
    fb.close()


def test_create_backend_wraps_snpe_from_config(tmp_path, monkeypatch):
    config = pytest.importorskip("agent.config")
    from agent.runtimes import create_runtime

    sdk = make_fake_sdk(tmp_path / "sdk")
    bundle = add_dlcs(copy_bundle(tmp_path / "bundle"), sdk)
    use_fake_sdk(monkeypatch, sdk)
    cfg = config.parse_config(
        {"backend": {"type": "snpe", "snpe": {"target": "cpu", "fallback_after": 2, "work_dir": str(tmp_path / "w")}}}
    )
    b = create_runtime(cfg.backend, FaceClassifier.model(load_manifest(bundle))).runtime
    try:
        assert isinstance(b, FallbackRuntime) and b.after == 2 and b.name == "snpe"
        assert "falls back to tflite after 2" in b.describe()
    finally:
        b.close()
    cfg = config.parse_config(
        {"backend": {"type": "snpe", "snpe": {"target": "cpu", "fallback": "none", "work_dir": str(tmp_path / "w")}}}
    )
    b = create_runtime(cfg.backend, FaceClassifier.model(load_manifest(bundle))).runtime
    assert isinstance(b, SnpeRuntime)
    b.close()


def test_after_a_fallback_every_payload_names_the_runtime_in_use(tmp_path, monkeypatch, mosquitto, mqtt_collector):
    """End to end: the snpe-net-run stand-in fails every call, the agent falls back to LiteRT, and events,
    stats and the Home Assistant device block say tflite (they used to keep saying snpe)."""
    from agent.config import apply_overrides, parse_config
    from agent.runner import run_agent
    from agent.synthetic import write_clip

    bundle, fail_file = stand_in_bundle(tmp_path, monkeypatch)
    fail_file.touch()  # the DSP is broken from the first frame
    clip = write_clip(tmp_path / "clip.mp4", seconds=2.0)
    cfg = parse_config(
        {
            "backend": {
                "type": "snpe",
                "snpe": {"target": "cpu", "fallback_after": 2, "work_dir": str(tmp_path / "w")},
            },
            "model": {"bundle": str(bundle)},
            "detector": {"type": "haar"},  # the tiny test bundle carries no BlazeFace model
            "mqtt": {"device_id": "fb"},
            "service": {"state_dir": str(tmp_path / "state"), "health_file": str(tmp_path / "health.json")},
        }
    )
    apply_overrides(cfg, source=str(clip), broker=f"{mosquitto.host}:{mosquitto.port}")
    collector = mqtt_collector(mosquitto.host, mosquitto.port, ["fer/fb/#", "homeassistant/#"])
    summary = run_agent(cfg)
    assert summary.failed_inferences == 1  # the first failure; the second switched and was answered
    events = [m.json() for m in collector.wait_count("fer/fb/events", summary.events, timeout=15)]
    assert events and {e["backend"] for e in events} == {"tflite"}
    stats = collector.wait_count("fer/fb/stats", 1, timeout=15)[-1].json()
    assert stats["backend"] == "tflite"
    assert stats["extra"]["backend_reason"].startswith("fallback: snpe failed 2 consecutive frames")
    discovery = [m for m in collector.messages if m.topic.startswith("homeassistant/")]
    assert discovery and "(snpe)" in discovery[0].json()["device"]["model"]  # as published on connect
    collector.wait_for(
        lambda c: any(
            m.topic.startswith("homeassistant/") and "(tflite)" in m.json()["device"]["model"] for m in list(c.messages)
        ),
        timeout=10,
        what="discovery naming tflite",
    )
