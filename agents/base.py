"""The agent protocol: ``ask(n)``, ``tell(observations)``, state rebuilt from observations.

An agent is constructed from a search space, the objectives and a seed. Its whole
state is the observations it was told (plus the suggestions it handed out and has
not seen back yet, its *pending* points). So a restarted campaign builds a fresh
agent, tells it every stored observation, and carries on: for a fixed seed the next
suggestion is the same as it would have been without the restart.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from sdl.models import Observation, Suggestion
from sdl.space import Objective, SearchSpace


@runtime_checkable
class Agent(Protocol):
    """What the campaign runner needs from any agent."""

    name: str

    def ask(self, n: int = 1) -> list[Suggestion]:
        """Return ``n`` new points, jointly chosen, that are not pending or measured."""
        ...

    def tell(self, observations: Sequence[Observation]) -> None:
        """Add measured points (in any order; repeats allowed)."""
        ...

    def add_pending(self, params: Sequence[dict]) -> None:
        """Points already handed out (e.g. stored before a restart) and not yet measured."""
        ...


@runtime_checkable
class Recommender(Protocol):
    """Optional: an agent whose values carry different noise (the ``exposure`` option) says
    which measured point to report and what the model estimates its value to be; the
    campaign's ``target`` stopping rule judges that estimate, not the best raw value."""

    def recommend(self) -> tuple[dict, float] | None:
        """``(params of a measured point, estimate of its value in objective units)``, or None when the best measured
        value is the answer (no model of the noise, or too few values)."""
        ...


class AgentFactory(Protocol):
    def __call__(
        self, space: SearchSpace, objectives: Sequence[Objective], seed: int = 0, **options
    ) -> Agent: ...
