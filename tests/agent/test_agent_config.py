"""Agent configuration: typed parsing, errors that name the key, print-config round trip, overrides."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from agent.config import (
    AgentConfig,
    apply_overrides,
    load_config,
    parse_broker,
    parse_config,
    parse_section,
    redacted,
    render_config,
)
from agent.contracts.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return str(exc.value)


def test_empty_file_and_no_file_give_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == AgentConfig()
    assert load_config(None) == AgentConfig()


def test_values_are_typed(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            """
source: {uri: 0, fps_cap: 15}
detector: {type: blazeface, max_faces: 2, margin: 0.1}
backend: {type: tflite, tflite: {model: float, threads: 2, delegate_options: {backend_type: htp}}}
mqtt: {host: broker.local, port: 8883}
""",
        )
    )
    assert cfg.source.uri == "0" and isinstance(cfg.source.fps_cap, float) and cfg.source.fps_cap == 15.0
    assert cfg.detector.type == "blazeface" and cfg.detector.max_faces == 2
    assert cfg.backend.tflite.model == "float" and cfg.backend.tflite.delegate_options == {"backend_type": "htp"}
    assert cfg.mqtt.host == "broker.local" and cfg.mqtt.port == 8883


@pytest.mark.parametrize(
    "text, expected",
    [
        ("backend: {type: foo}", "backend.type: 'foo' is not one of auto, qnn, snpe, tflite"),
        ("detector: {type: mtcnn}", "detector.type: 'mtcnn' is not one of blazeface, haar, yunet"),
        ("detector: {bogus: 1}", "detector.bogus: unknown key (allowed: type, runtime, detect_width"),
        ("nonsense: 1", "nonsense: unknown key (allowed: source, detector"),
        ("backend: {tflite: {threads: two}}", "backend.tflite.threads: expected an integer, got 'two'"),
        ("backend: {tflite: {threads: 0}}", "backend.tflite.threads: 0 is below the minimum 1"),
        ("tracking: {ema_alpha: 1.5}", "tracking.ema_alpha: 1.5 is above the maximum 1.0"),
        ("source: {realtime: yes please}", "source.realtime: 'yes please' is not one of true, false"),
        ("detector: 3", "detector: expected a mapping of keys, got 3"),
        ("mqtt: {port: http}", "mqtt.port: expected an integer, got 'http'"),
        ("mqtt: {tls: {verify: maybe}}", "mqtt.tls.verify: 'maybe' is not one of true, false"),
        ("service: {unknown_thing: 1}", "service.unknown_thing: unknown key"),
        ("log_level: loud", "log_level: 'loud' is not one of debug, info, warning, error"),
    ],
)
def test_errors_name_file_key_and_allowed_values(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "agent.yaml") + ": ")
    assert expected in message


def test_yaml_syntax_error_names_line(tmp_path):
    message = error_of(tmp_path, "source:\n  uri: [unclosed\n")
    assert "not valid YAML" in message and "line" in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_print_config_is_valid_commented_yaml_that_loads_back_to_defaults(tmp_path):
    text = render_config()
    assert "# auto = the first usable of qnn, then snpe, then tflite; qnn = QNN HTP" in text
    assert "[auto | qnn | snpe | tflite]\n  type: auto" in text
    assert yaml.safe_load(text)["detector"]["type"] == "blazeface"  # the product default: BlazeFace short-range
    assert yaml.safe_load(text)["detector"]["blazeface"]["model"] == "short"
    assert load_config(write(tmp_path, text)) == AgentConfig()


def test_secrets_are_never_printed(tmp_path):
    path = write(tmp_path, "mqtt: {host: b, auth: {username: u, password: hunter2}}")
    cfg = load_config(path)
    assert cfg.mqtt.auth.password == "hunter2"
    assert "hunter2" not in render_config(cfg)
    assert "hunter2" not in str(redacted(cfg))
    assert "u" == redacted(cfg)["mqtt"]["auth"]["username"]
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "print-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hunter2" not in out and "username: u" in out


def test_other_sections_checks_get_full_key(tmp_path):
    message = error_of(tmp_path, "mqtt: {auth: {password: x}}")
    assert "mqtt.auth" in message and "username" in message


def test_overrides_win_and_are_validated():
    cfg = apply_overrides(
        AgentConfig(),
        source="/dev/video2",
        backend="tflite",
        broker="10.0.0.5:1884",
        bundle="/opt/bundle",
        preview="out.mp4",
        max_frames=10,
        log_level="debug",
    )
    assert (cfg.source.uri, cfg.backend.type, cfg.mqtt.host, cfg.mqtt.port) == (
        "/dev/video2",
        "tflite",
        "10.0.0.5",
        1884,
    )
    assert cfg.bundle_path() == Path("/opt/bundle") and cfg.preview.path == "out.mp4" and cfg.max_frames == 10
    with pytest.raises(ConfigError, match="--backend: 'gpu' is not one of auto, qnn, snpe, tflite"):
        apply_overrides(AgentConfig(), backend="gpu")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("broker", ("broker", None)),
        ("broker:1884", ("broker", 1884)),
        ("[::1]:1883", ("::1", 1883)),
        ("127.0.0.1", ("127.0.0.1", None)),
    ],
)
def test_parse_broker(text, expected):
    assert parse_broker(text) == expected


def test_parse_broker_rejects_bad_port():
    with pytest.raises(ConfigError, match="--broker: port 'x' is not a number"):
        parse_broker("host:x")


def test_parse_config_where_prefix():
    with pytest.raises(ConfigError, match=r"^cli: source.loop"):
        parse_config({"source": {"loop": 3}}, where="cli")


@dataclass
class Inner:
    level: Literal[0, 1, 2] = 0


@dataclass
class Section:
    """A section as another module would define it: the loader needs no code for it."""

    names: list[str] = field(default_factory=list)
    sizes: tuple[int, ...] = ()
    limits: dict[str, float] = field(default_factory=dict)
    ratio: Optional[float] = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.ratio is not None and self.ratio > 1 and self.limits:
            raise ValueError("ratio: must be <= 1 when limits are set")


def test_generic_parsing_of_any_section_by_type_hints():
    s = parse_section(
        Section, {"names": ["a", 1], "sizes": [1, 2], "limits": {"x": 2}, "ratio": 1, "inner": {"level": 2}}
    )
    assert s == Section(["a", "1"], (1, 2), {"x": 2.0}, 1.0, Inner(2))
    assert parse_section(Section, None) == Section()
    for data, message in [
        ({"sizes": [1, "b"]}, "sec.sizes[1]: expected an integer, got 'b'"),
        ({"limits": {"x": "y"}}, "sec.limits.x: expected a number, got 'y'"),
        ({"inner": {"level": 5}}, "sec.inner.level: 5 is not one of 0, 1, 2"),
        ({"inner": {"level": True}}, "sec.inner.level: True is not one of 0, 1, 2"),
        ({"names": "a"}, "sec.names: expected a list, got 'a'"),
        ({"ratio": 2, "limits": {"x": 1}}, "sec.ratio: must be <= 1 when limits are set"),
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_section(Section, data, "sec")
        assert str(exc.value) == message


OLD_DETECTOR_KEYS = """
detector:
  type: haar
  haar_scale_factor: 1.2
  haar_min_neighbors: 4
  full_frame_every: 2
  blazeface_model: full
  tiles: 3
  yunet_model: /models/yunet.onnx
backend:
  snpe: {runtime: gpu}
"""


def test_files_with_the_old_flat_keys_still_load_with_one_line_each(tmp_path, caplog):
    """The keys before each detector had its own section, and backend.snpe.runtime (now target), load for one
    more release; each says in one line what to write instead."""
    with caplog.at_level(logging.WARNING, logger="agent.configio"):
        cfg = load_config(write(tmp_path, OLD_DETECTOR_KEYS))
    det = cfg.detector
    assert (det.haar.scale_factor, det.haar.min_neighbors, det.haar.full_frame_every) == (1.2, 4, 2)
    assert (det.blazeface.model, det.blazeface.tiles, det.yunet.model) == ("full", 3, "/models/yunet.onnx")
    assert cfg.backend.snpe.target == "gpu"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 7 and all("\n" not in n for n in notes)
    assert "detector.haar_scale_factor is deprecated and goes in the next release: write detector.haar.scale_factor" \
        in notes
    assert "backend.snpe.runtime is deprecated and goes in the next release: write backend.snpe.target" in notes


def test_old_keys_are_checked_like_the_new_and_the_new_key_wins(tmp_path):
    message = error_of(tmp_path, "detector: {tiles: 9}")
    assert "detector.blazeface.tiles: 9 is above the maximum 4" in message
    cfg = load_config(write(tmp_path, "detector: {tiles: 3, blazeface: {tiles: 1, model: full}}"))
    assert (cfg.detector.blazeface.tiles, cfg.detector.blazeface.model) == (1, "full")


@pytest.mark.parametrize("key, value", [
    ("tracking.leave_after_s", ".nan"), ("tracking.leave_after_s", ".inf"), ("publish.stats_interval_s", ".inf"),
    ("mqtt.reconnect.min_delay_s", ".nan"), ("tracking.min_confidence", ".nan"), ("source.reopen_max_s", ".inf"),
])
def test_numbers_must_be_finite_and_the_error_names_the_key(tmp_path, key, value):
    section, *middle, name = key.split(".")
    text = f"{section}:\n" + "".join(f"{'  ' * (i + 1)}{m}:\n" for i, m in enumerate(middle))
    text += f"{'  ' * (len(middle) + 1)}{name}: {value}\n"
    assert f"{key}: " in error_of(tmp_path, text) and "is not a finite number" in error_of(tmp_path, text)


def test_an_interval_where_zero_means_off_has_a_sane_minimum(tmp_path):
    assert "tracking.update_interval_s: 1e-09 is below the minimum 0.05 (0 turns it off)" in error_of(
        tmp_path, "tracking:\n  update_interval_s: 0.000000001\n")
    assert load_config(write(tmp_path, "tracking:\n  update_interval_s: 0\n")).tracking.update_interval_s == 0
    assert "source.fps_cap: 1e-09 is below the minimum" in error_of(tmp_path, "source:\n  fps_cap: 0.000000001\n")


def test_duplicate_keys_are_an_error_naming_both_lines(tmp_path):
    msg = error_of(tmp_path, "mqtt:\n  host: a\nlog_level: info\nmqtt:\n  port: 1884\n")
    assert "key 'mqtt' appears twice (line 1 and line 4)" in msg and str(tmp_path / "agent.yaml") in msg
    assert "key 'host' appears twice (line 2 and line 3)" in error_of(tmp_path, "mqtt:\n  host: a\n  host: b\n")
    assert "appears twice" in error_of(tmp_path, "tracking: {iou_threshold: 0.2, iou_threshold: 0.3}\n")


@pytest.mark.parametrize("content, needle", [
    ("source:\n  uri: '0'\n".encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0); it looks like UTF-16"),
    (bytes(range(128, 256)) * 4, "not UTF-8 text (byte 0x80 at offset 0)"),
    (b"# padding\n" * 200_000, "larger than 1024 KiB"),
])
def test_a_non_utf8_or_oversized_config_is_one_line_and_exit_2(tmp_path, content, needle):
    import time

    from agent.cli import main

    path = tmp_path / "agent.yaml"
    path.write_bytes(content)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))",
                           "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 30  # refused before parsing, not after a minute
    assert main  # the same entry point the console script runs
    assert load_config(write(tmp_path, "\ufefflog_level: debug\n")).log_level == "debug"  # a UTF-8 BOM is fine
