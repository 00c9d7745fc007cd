"""Scripted demo workflows, run by ``fleetcall demo [NAME]`` (``fleetcall demo --list``).

Each demo is a module with the same shape (:class:`Demo`): ``NAME``, ``QUESTION``, ``DESCRIPTION``,
``model(pace)`` (its default scripted model) and ``build(llm_factory=None, *, pace=1.0)``, which
returns a fresh :class:`~fleetcall.Orchestrator` whose model is ``llm_factory(respond)``: swap the
factory to serve the same scripted replies from another LLM (an emulated endpoint pool).

>>> from fleetcall.demos import get_demo
>>> demo = get_demo("replan")
>>> # result = await demo.build().run(demo.QUESTION)
"""

from __future__ import annotations

from typing import Protocol

from fleetcall import ConfigError, Orchestrator
from fleetcall.demos import parallelqa, replan, text2sql
from fleetcall.demos.common import LLMFactory


class Demo(Protocol):
    @property
    def NAME(self) -> str: ...  # noqa: N802 - module constants of the demo modules
    @property
    def QUESTION(self) -> str: ...  # noqa: N802
    @property
    def DESCRIPTION(self) -> str: ...  # noqa: N802

    def model(self, pace: float = 1.0) -> LLMFactory:
        """The demo's scripted model at its realistic pace times ``pace``."""
        ...

    def build(self, llm_factory: LLMFactory | None = None, *, pace: float = 1.0) -> Orchestrator:
        """A fresh orchestrator with the demo's tools; ``pace`` scales the tools' latencies too."""
        ...


# demo name -> its module, in the order ``--list`` shows them
DEMOS: dict[str, Demo] = {m.NAME: m for m in (parallelqa, text2sql, replan)}
DEFAULT_DEMO = "parallelqa"


def get_demo(name: str) -> Demo:
    """The demo called ``name``; a ``ConfigError`` listing the demos if there is none."""
    demo = DEMOS.get(name)
    if demo is None:
        raise ConfigError(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    return demo


__all__ = ["DEFAULT_DEMO", "DEMOS", "Demo", "LLMFactory", "get_demo"]
