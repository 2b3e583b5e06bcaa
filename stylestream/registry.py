"""One small registry class for every extensible thing (architectures, optimizers, schedules,
export formats, plugins, inference backends). The table drives CLI choices, help text and docs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown registry key; the message lists what is available."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, help: str = "", **meta: Any) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "", **meta: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, obj, help, dict(meta))

    def __getitem__(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def help_text(self) -> str:
        """'name: help' lines, for argparse epilogs and docs."""
        return "\n".join(f"  {e.name:<14} {e.help}" for e in self)

    def markdown_table(self, columns: tuple[str, ...] = ()) -> str:
        head = "| name | description |" + "".join(f" {c} |" for c in columns)
        sep = "|---|---|" + "---|" * len(columns)
        rows = [
            f"| `{e.name}` | {e.help} |" + "".join(f" {e.meta.get(c, '')} |" for c in columns) for e in self
        ]
        return "\n".join([head, sep, *rows])
