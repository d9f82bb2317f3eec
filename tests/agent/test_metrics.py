"""Prometheus textfile: parses with prometheus_client's parser, holds the run's numbers, is replaced atomically,
and a bad path is one clear line (exit 2) while a failing disk never stops the agent."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.capture import ArraySource, SourceConfig
from agent.config import AgentConfig, parse_config
from agent.contracts.errors import ConfigError
from agent.contracts.events import PublishContext
from agent.detectors.haar import HaarDetector
from agent.metrics import MetricsObserver
from agent.pipeline import NullPublisher
from agent.runner import build_pipeline
from agent.synthetic import grid_frame

parser = pytest.importorskip("prometheus_client.parser")


class HappyClassifier:
    name = "fake"

    def infer(self, faces):
        out = np.full((len(faces), 7), 0.05, np.float32)
        out[:, 3] = 0.7
        return out

    def describe(self):
        return "fake classifier"

    def close(self):
        pass


def _families(path: Path) -> dict:
    return {f.name: f for f in parser.text_string_to_metric_families(path.read_text())}


def _value(families: dict, name: str, **labels: str) -> float:
    family = families[name]
    for s in family.samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name}{labels} in {family.samples}")


def test_textfile_parses_and_holds_the_run(manifest, tmp_path: Path) -> None:
    path = tmp_path / "fer-agent.prom"
    cfg = AgentConfig()
    cfg.tracking.update_interval_s = 0
    observer = MetricsObserver(str(path), interval_s=3600.0)
    ctx = PublishContext("board-7", manifest.model_name, manifest.model_version, "tflite", "0.1.0")
    p = build_pipeline(cfg, manifest, ArraySource(SourceConfig(), [grid_frame(1)] * 20), HaarDetector(cfg.detector),
                       HappyClassifier(), NullPublisher(ctx), observers=[observer])
    p.run()
    fam = _families(path)
    # prometheus_client strips the _total suffix from counter family names
    assert fam["fer_agent_frames"].type == "counter" and _value(fam, "fer_agent_frames") == 20
    assert _value(fam, "fer_agent_events", type="appeared", label="happy") == 1
    assert _value(fam, "fer_agent_events", type="left", label="happy") == 1  # the end of the source
    info = fam["fer_agent_info"].samples[0].labels
    assert info["backend"] == "tflite" and info["device_id"] == "board-7" and info["model"] == manifest.model_name
    assert {s.labels["stage"] for s in fam["fer_agent_stage_latency_p95_seconds"].samples} >= {"detect", "infer"}
    assert 0 < _value(fam, "fer_agent_stage_latency_mean_seconds", stage="total") < 5
    for name in ("fer_agent_fps", "fer_agent_faces", "fer_agent_dropped_frames", "fer_agent_failed_inferences",
                 "fer_agent_outbox_depth", "fer_agent_outbox_dropped", "fer_agent_mqtt_connected",
                 "fer_agent_start_time_seconds"):
        assert name in fam, name
    assert _value(fam, "fer_agent_faces") == 1 and _value(fam, "fer_agent_mqtt_connected") == 1
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(tmp_path) == ["fer-agent.prom"]  # no temporary file left behind
    assert observer.writes == 2  # at the start and at the end (the interval never elapsed)


def test_textfile_is_rewritten_every_interval(manifest, tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    ticks = iter(range(1000))
    observer = MetricsObserver(str(path), interval_s=5.0, clock=lambda: float(next(ticks)))
    cfg = AgentConfig()
    p = build_pipeline(cfg, manifest, ArraySource(SourceConfig(), [grid_frame(1)] * 12), HaarDetector(cfg.detector),
                       HappyClassifier(), NullPublisher(), observers=[observer])
    p.run()
    assert observer.writes == 1 + 2 + 1  # start, every 5 clock ticks (one per frame), stop


def test_label_values_are_escaped(manifest, tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    cfg = AgentConfig()
    ctx = PublishContext('dev"ice\\x', "m", "1", "tflite\nfallback", "0.1.0")
    p = build_pipeline(cfg, manifest, ArraySource(SourceConfig(), []), HaarDetector(cfg.detector), HappyClassifier(),
                       NullPublisher(ctx), observers=[])
    MetricsObserver(str(path), 60.0).write(p.view)
    info = _families(path)["fer_agent_info"].samples[0].labels
    assert info["device_id"] == 'dev"ice\\x' and info["backend"] == "tflite\nfallback"


def test_bad_textfile_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics.textfile: .*must end in \.prom"):
        parse_config({"metrics": {"textfile": str(tmp_path / "metrics.txt")}})
    with pytest.raises(ConfigError, match=r"metrics.textfile: directory .*/nope does not exist"):
        MetricsObserver(str(tmp_path / "nope" / "m.prom"), 30.0)


def test_fer_agent_run_with_a_missing_directory_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"metrics": {"textfile": str(tmp_path / "nope" / "fer.prom")}}))
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(f"metrics.textfile: directory {tmp_path / 'nope'} does not exist")
    assert "Traceback" not in r.stderr


def test_a_failing_write_is_logged_and_the_agent_goes_on(manifest, tmp_path: Path, caplog) -> None:
    d = tmp_path / "gone"
    d.mkdir()
    observer = MetricsObserver(str(d / "m.prom"), interval_s=0.0)
    d.rmdir()  # the directory vanishes while the agent runs
    cfg = AgentConfig()
    p = build_pipeline(cfg, manifest, ArraySource(SourceConfig(), [grid_frame(1)] * 5), HaarDetector(cfg.detector),
                       HappyClassifier(), NullPublisher(), observers=[observer])
    with caplog.at_level(logging.WARNING, logger="agent.metrics"):
        summary = p.run()
    assert summary.frames == 5 and observer.failures == 7  # start, 5 frames, stop
    lines = [r.message for r in caplog.records if "metrics.textfile" in r.message]
    assert len(lines) == 1 and "cannot write" in lines[0]
