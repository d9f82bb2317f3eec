"""Plugin registries: a runtime or a detector is one module that declares itself.

A plugin class sets ``name`` (and ``config_class`` for its own config
section); defining a :class:`Plugin` subclass registers it in its base's
registry. :meth:`Registry.all` imports
every module of the plugin package once, so dropping a file into
``agent/runtimes/`` or ``agent/detectors/`` is the whole change: config
validation, ``print-config`` and the CLI help read the registry. Modules
import their heavy dependencies (LiteRT, ONNX Runtime) lazily, so discovery
works on a board that has only some of them.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, ClassVar, Generic, TypeVar

from agent.contracts.errors import FerError

T = TypeVar("T")


@dataclasses.dataclass
class NoConfig:
    """For a plugin without options of its own (it gets no config sub-section)."""


class Plugin:
    """Base of a plugin family (runtimes, detectors): the family's base class sets :attr:`registry`, and every
    subclass that sets its own non-empty ``name`` is registered there when it is defined."""

    registry: ClassVar[Registry[Any]]
    name: ClassVar[str] = ""
    #: The plugin's own config section (a dataclass); one without fields gets no section.
    config_class: ClassVar[type] = NoConfig
    #: One line for ``print-config`` and the CLI help.
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("name"), str) and cls.__dict__["name"]:
            cls.registry.register(cls)


class Registry(Generic[T]):
    def __init__(self, package: str, what: str) -> None:
        self.package = package
        self.what = what
        self._classes: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", "")
        if not name:
            raise TypeError(f"{cls.__qualname__}: a {self.what} needs a non-empty name")
        self._classes[name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def all(self) -> dict[str, type[T]]:
        """Every registered class by name, sorted by name (import order must not change what users see)."""
        self._discover()
        return dict(sorted(self._classes.items()))

    def names(self) -> tuple[str, ...]:
        return tuple(self.all())

    def config_sections(self, parent: str) -> dict[str, tuple[type, str]]:
        """One config sub-section per plugin with options of its own: ``{name: (config class, doc)}``, for a
        section class's ``config_sections()`` (see :mod:`agent.configio`); ``parent`` is the key of the choice."""
        out = {}
        for name, plugin in self.all().items():
            options: type = getattr(plugin, "config_class", NoConfig)
            if dataclasses.fields(options):
                summary = getattr(plugin, "summary", "")
                out[name] = (options, f"{parent}: {name} ({summary})" if summary else name)
        return out

    def fill_sections(self, section: Any) -> None:
        """Give ``section`` every plugin's sub-section that parsing did not set, with its defaults."""
        for name, plugin in self.all().items():
            if name not in section.__dict__:
                setattr(section, name, getattr(plugin, "config_class", NoConfig)())

    def get(self, name: str) -> type[T]:
        classes = self.all()
        if name not in classes:
            raise FerError(f"unknown {self.what} {name!r}; choose one of: {', '.join(classes)}")
        return classes[name]
