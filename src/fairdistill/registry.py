"""A tiny name -> factory registry, in the spirit of timm's ``register_model`` / ``create_model``.

Each axis of the design (datasets, models, backbones, targets, distances, embedders, presets) owns
one :class:`Registry`. Registering is a decorator; creating by an unknown name raises a
:class:`~fairdistill.errors.FairDistillError` that lists the allowed names, and tests iterate over
``list()`` so that whatever gets registered is tested.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to objects (usually factories), with one-line descriptions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            doc = description or (getattr(obj, "__doc__", None) or "").strip().splitlines()[:1]
            self._docs[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return deco

    def add(self, name: str, obj: T, description: str = "") -> T:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        return self.register(name, description)(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``; a clear error listing the names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def describe(self, name: str) -> str:
        self.get(name)
        return self._docs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items
