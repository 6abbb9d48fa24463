"""Converter tables shared by the frontends: versioned lookup of one converter function per source op."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable


ConverterFn = Callable[..., Any]


@dataclass(frozen=True)
class Converter:
    op_type: str
    domain: str
    since: int
    fn: Callable[..., Any]

    @property
    def attr_names(self) -> frozenset[str] | None:
        """Keyword-only parameters are the source attributes; None when the converter takes **kwargs."""
        params = inspect.signature(self.fn).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


class ConverterTable:
    """``(domain, op_type) -> [converters by 'since' version]``; lookup takes the newest version <= the model's."""

    def __init__(self, frontend: str):
        self.frontend = frontend
        self._table: dict[tuple[str, str], list[Converter]] = {}

    def register(self, op_type: str, since: int = 1, domain: str = "") -> Callable[[ConverterFn], ConverterFn]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            versions = self._table.setdefault((domain, op_type), [])
            if any(c.since == since for c in versions):
                raise ValueError(f"{self.frontend} converter {domain}::{op_type} since {since} is defined twice")
            versions.append(Converter(op_type, domain, since, fn))
            versions.sort(key=lambda c: c.since)
            return fn

        return deco

    def lookup(self, domain: str, op_type: str, version: int) -> Converter | None:
        best = None
        for c in self._table.get((domain, op_type), []):
            if c.since <= version:
                best = c
        return best

    def versions(self, domain: str, op_type: str) -> list[int]:
        return [c.since for c in self._table.get((domain, op_type), [])]

    def ops(self) -> list[tuple[str, str]]:
        return sorted(self._table)
