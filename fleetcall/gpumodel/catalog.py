"""A catalog of named entries with aliases: what the GPU and the model catalogs are built on.

Lookups go through a normalising ``key`` function (each catalog decides what "the same name"
means, e.g. case and punctuation), so ``"nvidia_A100"`` and ``"a100-80g"`` can meet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from fleetcall.errors import ConfigError


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def aliases(self) -> tuple[str, ...]: ...


T = TypeVar("T", bound=Named)


class Catalog(Generic[T]):
    """Entries by canonical name and aliases. ``kind`` names them in errors ("GPU", "model")."""

    def __init__(self, kind: str, key: Callable[[str], str]) -> None:
        self.kind = kind
        self.key = key
        self.entries: dict[str, T] = {}   # lookup key (canonical name or alias) -> entry

    def register(self, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under its name and aliases; a name or alias already taken is an error
        unless ``replace=True``."""
        keys = [self.key(entry.name), *(self.key(alias) for alias in entry.aliases)]
        taken = [key for key in keys if key in self.entries]
        if taken and not replace:
            raise ConfigError(f"{self.kind} {entry.name!r} is already in the catalog (as "
                              f"{self.entries[taken[0]].name!r}; pass replace=True)")
        for key in keys:
            self.entries[key] = entry
        return entry

    def find(self, name: str) -> T | None:
        """The entry called ``name`` (or one of its aliases), None if there is none."""
        return self.entries.get(self.key(name))

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted({entry.name for entry in self.entries.values()})
