"""Plugin registries: a runtime or a detector is one module that declares itself.

A plugin class sets ``name`` (and ``config_class`` for its own config
section); defining the subclass registers it. :meth:`Registry.all` imports
every module of the plugin package once, so dropping a file into
``agent/runtimes/`` or ``agent/detectors/`` is the whole change: config
validation, ``print-config`` and the CLI help read the registry. Modules
import their heavy dependencies (LiteRT, ONNX Runtime) lazily, so discovery
works on a board that has only some of them.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from agent.contracts.errors import FerError

T = TypeVar("T")


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

    def get(self, name: str) -> type[T]:
        classes = self.all()
        if name not in classes:
            raise FerError(f"unknown {self.what} {name!r}; choose one of: {', '.join(classes)}")
        return classes[name]
