"""Typed config sections: YAML data -> dataclasses, and back to commented YAML.

Parsing is driven by type hints, so any stage's or runtime's section works
without special code as long as it is a dataclass whose fields use str, int,
float, bool, ``Optional``, ``Literal``, ``list``, ``dict[str, ...]`` or a
nested dataclass. Field metadata drives the rest:

* ``"doc"``: the comment ``fer-agent print-config`` writes (or a callable returning it);
* ``"min"``/``"max"``: bounds for numbers (checked at load; a float must also be finite: ``.nan`` and
  ``.inf`` are refused);
* ``"min_if_set"``: for a number where 0 means "off", the smallest other value (``update_interval_s:
  1e-9`` would be an event per face per frame);
* ``"choices"``: allowed values, a tuple or a callable returning one (so a
  registry can supply them: ``backend.type`` lists every registered runtime);
* ``"secret"``: keeps a value out of print-config and logs.

A section class may also offer ``config_sections()`` -> ``{name: (class, doc)}``
for sub-sections that come from a registry (one per runtime); they are parsed,
printed and redacted like ordinary fields and set as attributes. It may offer
``renamed_keys()`` -> ``{old key: new dotted key inside the section}``: a file
still using an old key loads, with one warning line naming both.

Every error names the dotted key; the caller adds the file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import yaml

from agent.contracts.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    """One key of a section: a dataclass field or a registry sub-section."""

    name: str
    type: Any
    metadata: typing.Mapping[str, Any]
    init: bool = True  # False: a registry section, set as an attribute after construction


def specs(cls: type) -> list[Spec]:
    hints = typing.get_type_hints(cls)
    out = [Spec(f.name, hints[f.name], f.metadata) for f in dataclasses.fields(cls) if f.init]
    sections = getattr(cls, "config_sections", None)
    if sections is not None:
        out += [Spec(name, sec, {"doc": doc}, init=False) for name, (sec, doc) in sections().items()]
    return out


def choices(meta: typing.Mapping[str, Any]) -> tuple[Any, ...] | None:
    allowed = meta.get("choices")
    return tuple(allowed() if callable(allowed) else allowed) if allowed is not None else None


def is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else Union[tuple(args)]  # type: ignore[return-value]
    return False, tp


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def convert(value: Any, tp: Any, key: str, meta: typing.Mapping[str, Any] | None = None) -> Any:
    """One value checked against its type and metadata; ConfigError names ``key``."""
    meta = meta or {}
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be empty")
    tp = inner
    origin = typing.get_origin(tp)
    if is_section(tp):
        return build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or type(value) is not type(allowed[0]):
            raise ConfigError(f"{key}: {_fmt(value)} is not one of {', '.join(str(a) for a in allowed)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_fmt(value)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_fmt(value)}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
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
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {value} is not a finite number")
    elif tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {_fmt(value)}")
        value = str(value)  # camera index 0 or a numeric device id written without quotes
    else:
        raise ConfigError(f"{key}: unsupported field type {tp!r} (a bug in the section's dataclass)")
    allowed = choices(meta)
    if allowed is not None and value not in allowed:
        shown = ", ".join(str(a) for a in allowed if a != "")
        raise ConfigError(f"{key}: {_fmt(value)} is not one of {shown}" + (" (or empty)" if "" in allowed else ""))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value} is above the maximum {hi}")
    floor = meta.get("min_if_set")
    if floor is not None and value != 0 and value < floor:
        raise ConfigError(f"{key}: {value} is below the minimum {floor} (0 turns it off)")
    return value


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """A section from plain data (YAML); errors name ``prefix`` plus the dotted path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix or "top level"
        raise ConfigError(f"{where}: expected a mapping of keys, got {_fmt(data)}")
    data = _renamed(cls, data, prefix)
    keys = {s.name: s for s in specs(cls)}
    for key in data:
        if key not in keys:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{dotted}: unknown key (allowed: {', '.join(keys)})")
    values = {
        name: convert(data[name], s.type, f"{prefix}.{name}" if prefix else name, s.metadata)
        for name, s in keys.items()
        if name in data
    }
    try:
        obj = cls(**{k: v for k, v in values.items() if keys[k].init})
    except (TypeError, ValueError) as exc:  # a section's own __post_init__ check
        raise ConfigError(_qualify(str(exc), prefix, set(keys))) from None
    for name, value in values.items():
        if not keys[name].init:
            setattr(obj, name, value)
    return obj


def _renamed(cls: type, data: dict, prefix: str) -> dict:
    """``data`` with a section's old keys moved to their new place (the new key wins when both are given)."""
    renamed: dict[str, str] = cls.renamed_keys() if hasattr(cls, "renamed_keys") else {}
    old_keys = [k for k in renamed if k in data]
    if not old_keys:
        return data
    data = dict(data)
    dotted = f"{prefix}." if prefix else ""
    for old in old_keys:
        value = data.pop(old)
        *parents, last = renamed[old].split(".")
        place = data
        for part in parents:  # copy the sub-mappings on the way: the caller's data stays as it was
            if not isinstance(place, dict):
                break
            inner = place.get(part)
            place[part] = dict(inner) if isinstance(inner, dict) else {} if inner is None else inner
            place = place[part]
        if isinstance(place, dict):  # not a mapping: building the section names that key's error
            place.setdefault(last, value)
        log.warning("%s%s is deprecated and goes in the next release: write %s%s", dotted, old, dotted, renamed[old])
    return data


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


def check(obj: Any, key: str) -> None:
    """Re-validate a section whose fields were changed in place (CLI overrides); errors name ``key``."""
    for s in specs(type(obj)):
        value = getattr(obj, s.name)
        if is_section(type(value)):
            check(value, f"{key}.{s.name}")
        elif value is not None:
            convert(value, s.type, f"{key}.{s.name}", s.metadata)


# --------------------------------------------------------------------------- printing


def redacted(obj: Any) -> Any:
    """Config as plain dicts with secret fields replaced, for logs and debug output."""
    if is_section(type(obj)):
        out = {}
        for s in specs(type(obj)):
            val = getattr(obj, s.name)
            out[s.name] = ("<secret>" if val not in (None, "") else val) if s.metadata.get("secret") else redacted(val)
        return out
    if isinstance(obj, list):
        return [redacted(v) for v in obj]
    if isinstance(obj, dict):
        return {k: redacted(v) for k, v in obj.items()}
    return obj


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def allowed_values(s: Spec) -> list[str]:
    listed = choices(s.metadata)
    if listed is not None:
        return [str(a) for a in listed if a != ""]
    _, inner = _is_optional(s.type)
    if typing.get_origin(inner) is Literal:
        return [str(a) for a in typing.get_args(inner)]
    return []


def render(obj: Any, indent: int, lines: list[str]) -> None:
    """Append ``obj`` as commented YAML lines (docs and allowed values as comments, secrets left out)."""
    pad = "  " * indent
    for s in specs(type(obj)):
        value = getattr(obj, s.name)
        doc = s.metadata.get("doc")
        doc = doc() if callable(doc) else doc  # a registry's list of plugins
        if is_section(type(value)):
            if indent == 0 and lines[-1] != "":
                lines.append("")
            if doc:
                lines.append(f"{pad}# {doc}")
            lines.append(f"{pad}{s.name}:")
            render(value, indent + 1, lines)
            continue
        if indent == 0 and lines[-1].startswith(" "):  # first top-level key after a section
            lines.append("")
        comment = doc or ""
        allowed = allowed_values(s)
        if allowed and "|" not in comment:
            comment = f"{comment} [{' | '.join(allowed)}]".strip()
        if comment:
            lines.append(f"{pad}# {comment}")
        if s.metadata.get("secret"):
            lines.append(f"{pad}# {s.name}: (secret; set it here or as the section describes, it is never printed)")
        else:
            lines.append(f"{pad}{s.name}: {_scalar(value)}")
