"""A tiny name -> constructor registry shared by body models, tokenizers, samplers, protocols ...

Each Hydra config group has the same name as its registry, and a config's keys are the keyword
arguments of the registered constructor, so ``build(name, **cfg)`` is all a script needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to constructors (classes or factory functions).

    Example:
        >>> BODY_MODELS = Registry("body_model")
        >>> @BODY_MODELS.register("free")
        ... def load_free(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator that registers ``fn`` under ``name``; a name can be registered only once."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable[..., Any]:
        """The constructor registered as ``name``; a clear error lists the known names."""
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self._items[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the constructor registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
