"""Lazy package exports (PEP 562): a package names what it offers without importing it.

``import fleetcall.router.queue`` must not load the executor, LangChain or Starlette, so a
package's ``__init__`` maps each public name to the module that defines it and imports that
module on first access::

    __getattr__, __dir__ = lazy_exports(__name__, {"Orchestrator": "fleetcall.executor.orchestrator"})

Type checkers and IDEs still see the names: each ``__init__`` also imports them under
``typing.TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to its module.

    An imported name is cached in the package's namespace, so later lookups cost nothing.
    Unknown names raise ``AttributeError`` as for any module.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        # a name mapped to a module of that name is the submodule itself (``fleetcall.events``)
        is_submodule = module.endswith(f".{name}") and not hasattr(imported, name)
        value = imported if is_submodule else getattr(imported, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
