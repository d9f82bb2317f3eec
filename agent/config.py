"""The agent configuration: one YAML file parsed into typed dataclasses.

Parsing is generic and driven by type hints, so a section another module
defines (``MqttConfig``, ``ServiceConfig``, ``SnpeConfig``...) works here
without special code as long as it is a dataclass whose fields use str, int,
float, bool, ``Optional``, ``Literal``, ``list``, ``dict[str, ...]`` or a
nested dataclass. Field metadata drives the rest:

* ``metadata={"doc": "..."}`` is the comment ``fer-agent print-config`` writes;
* ``metadata={"min": 0, "max": 1}`` bounds numbers (checked at load);
* ``metadata={"secret": True}`` keeps a value out of print-config and logs.

Every error names the file and the dotted key, e.g.
``agent.yaml: backend.type: 'foo' is not one of auto, tflite, snpe``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from agent.backends.snpe import SnpeConfig
from agent.backends.tflite import TFLiteConfig
from agent.contracts.errors import ConfigError
from agent.contracts.manifest import default_bundle_path
from agent.mqtt.config import MqttConfig
from agent.service import ServiceConfig

@dataclass
class SourceConfig:
    uri: str = field(
        default="0",
        metadata={
            "doc": "camera index (0), /dev/videoN, video file, image file or directory, "
            "rtsp://... or http://... URL, or a GStreamer pipeline ending in appsink"
        },
    )
    fps_cap: float = field(
        default=0.0, metadata={"doc": "process at most this many frames/s (0 = as fast as frames come)", "min": 0.0}
    )
    width: int = field(
        default=0, metadata={"doc": "requested capture width for cameras (0 = driver default)", "min": 0}
    )
    height: int = field(
        default=0, metadata={"doc": "requested capture height for cameras (0 = driver default)", "min": 0}
    )
    live: Optional[bool] = field(
        default=None,
        metadata={
            "doc": "treat as a live source: read in a thread, keep the newest frame, count drops, "
            "reopen when it fails; empty = cameras, URLs and GStreamer are live, files are not"
        },
    )
    realtime: bool = field(
        default=False,
        metadata={
            "doc": "files only: play at the file's own frame rate and skip frames when behind (default: every frame)"
        },
    )
    loop: bool = field(
        default=False, metadata={"doc": "files and image folders: start again at the end instead of stopping"}
    )
    reopen_initial_s: float = field(
        default=0.5, metadata={"doc": "first wait before reopening a dropped live source", "min": 0.0}
    )
    reopen_max_s: float = field(
        default=30.0, metadata={"doc": "longest wait between reopen attempts (doubles up to this)", "min": 0.0}
    )


@dataclass
class DetectorConfig:
    type: Literal["haar", "blazeface", "yunet"] = field(
        default="haar",
        metadata={
            "doc": "haar (OpenCV cascade), blazeface (MediaPipe model from the bundle), "
            "yunet (cv2.FaceDetectorYN, needs yunet_model)"
        },
    )
    blazeface_model: Literal["short", "full"] = field(
        default="short",
        metadata={"doc": "BlazeFace variant: short (faces within ~2 m, 128x128) or full (up to ~5 m, 192x192)"},
    )
    yunet_model: Optional[str] = field(
        default=None, metadata={"doc": "path to a YuNet .onnx model (detector.type: yunet)"}
    )
    detect_width: int = field(
        default=320,
        metadata={
            "doc": "haar/yunet: downscale frames to this width before detecting (0 = full size); boxes are mapped "
            "back. Haar keeps min_face at least 24 px (its window) whatever this says",
            "min": 0,
        },
    )
    min_face: int = field(
        default=48,
        metadata={"doc": "ignore faces smaller than this many frame pixels (the classifier sees 48x48)", "min": 1},
    )
    max_faces: int = field(
        default=4, metadata={"doc": "classify at most this many faces per frame (largest first)", "min": 1}
    )
    margin: float = field(
        default=0.0,
        metadata={"doc": "grow the face square by this fraction of its side on each side", "min": 0.0, "max": 1.0},
    )
    score_threshold: float = field(
        default=0.5, metadata={"doc": "blazeface/yunet: minimum detection score", "min": 0.0, "max": 1.0}
    )
    nms_threshold: float = field(
        default=0.3, metadata={"doc": "blazeface/yunet: IoU above which boxes are merged", "min": 0.0, "max": 1.0}
    )
    haar_scale_factor: float = field(default=1.15, metadata={"doc": "haar: image pyramid step", "min": 1.01})
    haar_min_neighbors: int = field(default=5, metadata={"doc": "haar: detections needed to keep a box", "min": 0})
    full_frame_every: int = field(
        default=3,
        metadata={
            "doc": "haar: search the whole frame every n-th frame and in between only around the faces found "
            "last (1 = whole frame every time; more is cheaper, and a new face is found up to n-1 frames later)",
            "min": 1,
        },
    )


@dataclass
class BackendConfig:
    type: Literal["auto", "tflite", "snpe"] = field(
        default="auto", metadata={"doc": "auto = snpe when the SDK and a DLC are present, else tflite"}
    )
    tflite: TFLiteConfig = field(default_factory=TFLiteConfig)
    snpe: SnpeConfig = field(default_factory=SnpeConfig)


@dataclass
class ModelConfig:
    bundle: Optional[str] = field(
        default=None, metadata={"doc": "model bundle directory; empty = the bundle inside the package"}
    )
    verify: bool = field(default=True, metadata={"doc": "check the sha256 of every bundle file at start"})


@dataclass
class TrackingConfig:
    iou_threshold: float = field(
        default=0.3,
        metadata={"doc": "a detection continues a face when their boxes overlap this much", "min": 0.0, "max": 1.0},
    )
    leave_after_s: float = field(default=1.0, metadata={"doc": "a face not seen for this long has left", "min": 0.0})
    confirm_frames: int = field(
        default=2, metadata={"doc": "frames a new face must be seen before it 'appeared'", "min": 1}
    )
    ema_alpha: float = field(
        default=0.3,
        metadata={"doc": "smoothing: weight of the newest frame's probabilities (1 = none)", "min": 0.01, "max": 1.0},
    )
    min_confidence: float = field(
        default=0.4,
        metadata={"doc": "a new dominant emotion needs at least this smoothed probability", "min": 0.0, "max": 1.0},
    )
    min_duration_s: float = field(
        default=0.5, metadata={"doc": "... and must stay dominant this long before 'changed' is sent", "min": 0.0}
    )
    update_interval_s: float = field(
        default=10.0, metadata={"doc": "periodic 'update' event per face (0 = off)", "min": 0.0}
    )


@dataclass
class PublishConfig:
    state_interval_s: float = field(
        default=5.0,
        metadata={"doc": "publish the state snapshot at least this often (also on every event)", "min": 0.1},
    )
    stats_interval_s: float = field(
        default=30.0, metadata={"doc": "publish and log stage timings this often", "min": 1.0}
    )


@dataclass
class PreviewConfig:
    path: Optional[str] = field(
        default=None,
        metadata={"doc": "write annotated frames: a .mp4/.avi file, or a directory for PNG frames; empty = off"},
    )
    every_n: int = field(default=1, metadata={"doc": "annotate every n-th frame", "min": 1})


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
    service: ServiceConfig = _section(ServiceConfig, "Running as a systemd service: state, scratch and health files")
    preview: PreviewConfig = _section(PreviewConfig, "Annotated frames for a person to look at (emulation)")
    log_level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata={"doc": "log verbosity"})
    max_frames: int = field(
        default=0, metadata={"doc": "stop after this many frames (0 = run until stopped or the file ends)", "min": 0}
    )

    def bundle_path(self) -> Path:
        return Path(self.model.bundle) if self.model.bundle else default_bundle_path()


# --------------------------------------------------------------------------- parsing


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else Union[tuple(args)]  # type: ignore[return-value]
    return False, tp


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _convert(value: Any, tp: Any, key: str, meta: Any) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be empty")
    tp = inner
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or type(value) is not type(allowed[0]):
            raise ConfigError(f"{key}: {_fmt(value)} is not one of {', '.join(str(a) for a in allowed)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_fmt(value)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]", {}) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_fmt(value)}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, f"{key}.{k}", {}) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {_fmt(value)} is not one of true, false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_fmt(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_fmt(value)}")
        value = float(value)
    elif tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {_fmt(value)}")
        value = str(value)  # camera index 0 or a numeric device id written without quotes
    else:
        raise ConfigError(f"{key}: unsupported field type {tp!r} (a bug in the section's dataclass)")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value} is above the maximum {hi}")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix or "top level"
        raise ConfigError(f"{where}: expected a mapping of keys, got {_fmt(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{dotted}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            dotted = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(data[name], hints[name], dotted, f.metadata)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a section's own __post_init__ check
        raise ConfigError(_qualify(str(exc), prefix, set(fields))) from None


def _qualify(msg: str, prefix: str, names: set[str]) -> str:
    """Give a section's own error message its full dotted key.

    Sections name keys relative to themselves (``port: ...`` in ``mqtt``, or
    ``tls.cert_file ...`` from inside ``mqtt.tls``); the loader adds the rest.
    """
    parent, _, last = prefix.rpartition(".")
    first = re.split(r"[\s:.,]", msg, maxsplit=1)[0]
    if prefix and first == last:
        return f"{parent}.{msg}" if parent else msg
    if first in names:
        return f"{prefix}.{msg}" if prefix else msg
    return f"{prefix or 'top level'}: {msg}"


def parse_section(cls: type, data: Any, key: str = "") -> Any:
    """Any config dataclass from plain data (YAML); errors name ``key`` plus the dotted path."""
    return _build(cls, data, key)


def parse_config(data: Any, where: str = "config") -> AgentConfig:
    """Dict (from YAML) -> :class:`AgentConfig`; errors are prefixed with ``where``."""
    try:
        return _build(AgentConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path | None) -> AgentConfig:
    """Read a YAML file (``None`` = all defaults). Every error names the file and key."""
    if path is None:
        return AgentConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{pos}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data, where=str(path))


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
        cfg.source.uri = _convert(source, str, "--source", {})
    if backend is not None:
        cfg.backend.type = _convert(backend, _hints(BackendConfig)["type"], "--backend", {})
    if detector is not None:
        cfg.detector.type = _convert(detector, _hints(DetectorConfig)["type"], "--detector", {})
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
        cfg.max_frames = _convert(max_frames, int, "--max-frames", {"min": 0})
    if log_level is not None:
        cfg.log_level = _convert(log_level, _hints(AgentConfig)["log_level"], "--log-level", {})
    return cfg


# --------------------------------------------------------------------------- printing


def _is_secret(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("secret"))


def redacted(obj: Any) -> Any:
    """Config as plain dicts with secret fields replaced, for logs and debug output."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            val = getattr(obj, f.name)
            out[f.name] = ("<secret>" if val not in (None, "") else val) if _is_secret(f) else redacted(val)
        return out
    if isinstance(obj, list):
        return [redacted(v) for v in obj]
    if isinstance(obj, dict):
        return {k: redacted(v) for k, v in obj.items()}
    return obj


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _render(obj: Any, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        doc = f.metadata.get("doc")
        if dataclasses.is_dataclass(value):
            if indent == 0 and lines[-1] != "":
                lines.append("")
            if doc:
                lines.append(f"{pad}# {doc}")
            lines.append(f"{pad}{f.name}:")
            _render(value, indent + 1, lines)
            continue
        if indent == 0 and lines[-1].startswith(" "):  # first top-level key after a section
            lines.append("")
        comment = doc or ""
        allowed = _allowed(hints[f.name])
        if allowed and "|" not in comment:
            comment = f"{comment} [{' | '.join(allowed)}]".strip()
        if comment:
            lines.append(f"{pad}# {comment}")
        if _is_secret(f):
            lines.append(f"{pad}# {f.name}: (secret; set it here or as the section describes, it is never printed)")
        else:
            lines.append(f"{pad}{f.name}: {_scalar(value)}")


def _allowed(tp: Any) -> list[str]:
    _, inner = _is_optional(tp)
    if typing.get_origin(inner) is Literal:
        return [str(a) for a in typing.get_args(inner)]
    return []


def render_config(cfg: AgentConfig | None = None) -> str:
    """Commented YAML of ``cfg`` (default config when None); secrets are left out."""
    cfg = cfg if cfg is not None else AgentConfig()
    lines = [
        "# fer-agent configuration. Every key is optional; the values shown are the defaults.",
        "# Check a file with: fer-agent check-config FILE",
        "",
    ]
    _render(cfg, 0, lines)
    return "\n".join(lines) + "\n"
