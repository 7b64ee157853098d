"""One registry mechanism for every kind of plug-in: selectors, compression recipes, suites.

A registry maps names to entries and finds its built-ins by walking its package: on the first
lookup it imports every module of the package (they register themselves at import), so a new
built-in is one new file, with no list of modules to keep in step. Modules of these packages
import nothing heavy at module level (torch, llm-compressor and lm-eval load inside functions),
so the walk is cheap. It is a dict, so tests may add and remove entries.

    SELECTORS = Registry("selector", "cola_ray.selectors")
    SELECTORS.add("random", Selector(...))       # usually from a @register_... decorator
    SELECTORS.lookup("random")                   # UserError naming the choices if unknown
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from cola_ray.errors import UserError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    def __init__(self, kind: str, package: str, skip: tuple[str, ...] = ()):
        super().__init__()
        self.kind, self.package, self.skip = kind, package, tuple(skip)
        self._loaded = False

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def load_builtins(self) -> "Registry[T]":
        """Import every public module of the package (idempotent)."""
        if not self._loaded:
            self._loaded = True
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_") and info.name not in self.skip:
                    importlib.import_module(f"{self.package}.{info.name}")
        return self

    def names(self) -> list[str]:
        return sorted(self.load_builtins())

    def lookup(self, name: str) -> T:
        self.load_builtins()
        try:
            return self[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r} (expected one of {', '.join(sorted(self))})") from None
