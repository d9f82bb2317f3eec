"""The agent configuration: one YAML file, assembled from the sections the stages own.

Each stage and runtime defines its own section dataclass next to its code
(``SourceConfig`` in capture, ``DetectorConfig`` in detectors,
``BackendConfig`` with one sub-section per registered runtime, ``TrackingConfig``
in track, ``PublishConfig`` in loop_settings, ``MqttConfig``...); this module only composes them into
:class:`AgentConfig` and reads, overrides and prints the file.
:mod:`agent.configio` does the typed parsing, so every error names the file
and the dotted key, e.g. ``agent.yaml: backend.type: 'foo' is not one of auto, qnn, snpe, tflite``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from agent.capture import SourceConfig
from agent.configio import build, convert, redacted, render, specs
from agent.contracts.errors import ConfigError
from agent.contracts.manifest import default_bundle_path
from agent.detectors import DetectorConfig
from agent.loop_settings import PublishConfig
from agent.metrics import MetricsConfig
from agent.mqtt.config import MqttConfig
from agent.preview import PreviewConfig
from agent.runtimes import BackendConfig
from agent.service import ServiceConfig
from agent.track import TrackingConfig

__all__ = ["AgentConfig", "BackendConfig", "DetectorConfig", "ModelConfig", "PreviewConfig", "PublishConfig",
           "SourceConfig", "TrackingConfig", "apply_overrides", "load_config", "parse_broker", "parse_config",
           "redacted", "render_config"]


@dataclass
class ModelConfig:
    bundle: Optional[str] = field(
        default=None, metadata={"doc": "model bundle directory; empty = the bundle inside the package"}
    )
    verify: bool = field(default=True, metadata={"doc": "check the sha256 of every bundle file at start"})


def _section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass
class AgentConfig:
    source: SourceConfig = _section(SourceConfig, "Capture: where frames come from")
    detector: DetectorConfig = _section(DetectorConfig, "Face detection")
    model: ModelConfig = _section(ModelConfig, "The model bundle (manifest.json + model files)")
    backend: BackendConfig = _section(BackendConfig, "Inference runtime")
    tracking: TrackingConfig = _section(TrackingConfig, "Face tracking, smoothing and when events are sent")
    publish: PublishConfig = _section(PublishConfig, "How often state and stats are published")
    mqtt: MqttConfig = _section(MqttConfig, "MQTT broker, topics and reliability (docs/mqtt.md)")
    service: ServiceConfig = _section(ServiceConfig, "Running as a systemd service: state and health files")
    preview: PreviewConfig = _section(PreviewConfig, "Annotated frames for a person to look at (emulation)")
    metrics: MetricsConfig = _section(MetricsConfig, "Prometheus metrics through node_exporter's textfile collector")
    log_level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata={"doc": "log verbosity"})
    max_frames: int = field(
        default=0, metadata={"doc": "stop after this many frames (0 = run until stopped or the file ends)", "min": 0}
    )

    def bundle_path(self) -> Path:
        return Path(self.model.bundle) if self.model.bundle else default_bundle_path()


def parse_section(cls: type, data: Any, key: str = "") -> Any:
    """Any config dataclass from plain data (YAML); errors name ``key`` plus the dotted path."""
    return build(cls, data, key)


def parse_config(data: Any, where: str = "config") -> AgentConfig:
    """Dict (from YAML) -> :class:`AgentConfig`; errors are prefixed with ``where``."""
    try:
        return build(AgentConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path | None) -> AgentConfig:
    """Read a YAML file (``None`` = all defaults). Every error names the file and key."""
    if path is None:
        return AgentConfig()
    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader that refuses duplicate keys
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{pos}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data, where=str(path))


MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; a 50 MB file would take a minute to parse


def _read_text(path: Path) -> str:
    """The file as text: at most ``MAX_CONFIG_BYTES``, UTF-8 (a BOM is fine). One line naming the file otherwise."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\0" in data[:64]
        hint = "; it looks like UTF-16 (some Windows editors save that): save it as UTF-8" if utf16 else ""
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}){hint}") \
            from None


class DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader keeps the last of two equal keys without a word; a config must say which one it means."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen[key] = line
            except TypeError:
                continue  # unhashable: the base class reports it
            if first is not None:
                raise DuplicateKeyError(f"key {key!r} appears twice (line {first} and line {line}); keep one")
        return super().construct_mapping(node, deep=deep)


# --------------------------------------------------------------------------- overrides


def parse_broker(text: str) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6addr]:port`` too) -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ConfigError(f"--broker: {text!r} has no host (expected host[:port])")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--broker: port {port!r} is not a number between 1 and 65535")
        return host, int(port)
    return host, None


def _override(section: Any, key: str, value: Any, flag: str) -> None:
    spec = next(s for s in specs(type(section)) if s.name == key)
    setattr(section, key, convert(value, spec.type, flag, spec.metadata))


def apply_overrides(
    cfg: AgentConfig,
    *,
    source: str | None = None,
    backend: str | None = None,
    broker: str | None = None,
    bundle: str | None = None,
    preview: str | None = None,
    max_frames: int | None = None,
    log_level: str | None = None,
    detector: str | None = None,
) -> AgentConfig:
    """Command-line flags win over the file; values are validated like the file's."""
    if source is not None:
        _override(cfg.source, "uri", source, "--source")
    if backend is not None:
        _override(cfg.backend, "type", backend, "--backend")
    if detector is not None:
        _override(cfg.detector, "type", detector, "--detector")
    if broker is not None:
        host, port = parse_broker(broker)
        cfg.mqtt.host = host
        if port is not None:
            cfg.mqtt.port = port
    if bundle is not None:
        cfg.model.bundle = bundle
    if preview is not None:
        cfg.preview.path = preview
    if max_frames is not None:
        _override(cfg, "max_frames", max_frames, "--max-frames")
    if log_level is not None:
        _override(cfg, "log_level", log_level, "--log-level")
    return cfg


def render_config(cfg: AgentConfig | None = None) -> str:
    """Commented YAML of ``cfg`` (default config when None); secrets are left out."""
    cfg = cfg if cfg is not None else AgentConfig()
    lines = [
        "# fer-agent configuration. Every key is optional; the values shown are the defaults.",
        "# Check a file with: fer-agent check-config FILE",
        "",
    ]
    render(cfg, 0, lines)
    return "\n".join(lines) + "\n"
