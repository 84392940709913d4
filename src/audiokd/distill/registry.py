"""The registry of knowledge-distillation loss terms: ``kind`` (soft, feature, attention) -> name -> term.

It holds no losses itself. :mod:`audiokd.distill.losses` registers the soft terms and
:mod:`audiokd.distill.feature_losses` the feature and attention terms, each importing only this module, so
the two loss modules do not depend on each other. A term is known once the module that defines it has been
imported; :mod:`audiokd.distill.objective` imports both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {"soft": {}, "feature": {}, "attention": {}}


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a loss term (or a term's factory) as ``name`` under ``kind``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[kind][name] = fn
        return fn

    return deco


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The registered ``kind`` term called ``name``; an unknown name lists the known ones."""
    try:
        return REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(kind, {})))
        raise ValueError(f"distill.{kind}_loss: unknown {name!r}; known: {known}") from None
