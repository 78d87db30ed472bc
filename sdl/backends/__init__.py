"""Instrument backends: what runs a plan for a worker.

Every backend, sdl's own RunEngine worker and the bluesky-queueserver bridge
(:mod:`sdl.backends.queueserver`) alike, has the same small shape: it names the
plans it accepts, runs one plan at a time and hands every event-model document
to the caller as it is made, can be told from another thread to stop, and is
closed when the worker ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

__all__ = ["RunOutcome", "InstrumentBackend", "EXIT_STATUSES"]

#: the values :attr:`RunOutcome.exit_status` may take (bluesky's stop-document words)
EXIT_STATUSES = ("success", "fail", "abort")


@dataclass
class RunOutcome:
    """How a plan ended.

    ``exit_status`` is ``"success"``, ``"fail"`` or ``"abort"`` (the words of a
    bluesky stop document). ``run_uids`` lists the runs the plan opened, in the
    order they were opened (empty when the plan failed before opening one).
    ``reason`` says why a plan failed or was aborted, in words a user can act on.
    """

    exit_status: str  # "success" | "fail" | "abort"
    run_uids: list[str]  # runs the plan opened, in order
    reason: str = ""


@runtime_checkable
class InstrumentBackend(Protocol):
    """What a worker needs from an instrument backend."""

    #: the instrument's name, as sdl's queue knows it
    name: str

    def plans(self) -> list[str]:
        """Plan names the backend accepts."""
        ...

    def run(
        self, plan: str, kwargs: dict, md: dict, on_document: Callable[[str, dict], None]
    ) -> RunOutcome:
        """Run ``plan(**kwargs)`` with ``md`` in every start document; block until it ends.

        Every event-model document goes to ``on_document(name, doc)`` as it is
        made, on the calling thread, in the order it was made. Bad input (an
        unknown plan, refused parameters) raises :class:`sdl.errors.InvalidInput`
        before anything runs.
        """
        ...

    def abort(self, reason: str) -> None:
        """Stop the running plan; safe to call from another thread.

        The plan's runs are closed with exit status ``"abort"`` and :meth:`run`
        returns ``RunOutcome("abort", ..., reason)``. Does nothing when no plan runs.
        """
        ...

    def close(self) -> None:
        """Release connections and threads. The backend is not used afterwards."""
        ...
