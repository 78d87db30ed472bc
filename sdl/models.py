"""What flows between agent, campaign and store: suggestions and observations."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sdl.space import Value


def new_id() -> str:
    return uuid.uuid4().hex


class Provenance(BaseModel):
    """Why a point was suggested: enough to audit every experiment an agent chose."""

    model_config = ConfigDict(extra="allow")

    agent: str
    model: str | None = None
    acquisition: str | None = None
    acquisition_value: float | None = None
    predicted_mean: dict[str, float] | None = None
    predicted_sd: dict[str, float] | None = None
    reason: str = ""


class Suggestion(BaseModel):
    """A point an agent (or a user) asks to be measured."""

    id: str = Field(default_factory=new_id)
    params: dict[str, Value]
    provenance: Provenance


class Observation(BaseModel):
    """A measured point: the reduced values of the objectives (and any extras).

    ``ok`` is False for a failed experiment: agents must not treat it as data but
    may use it to avoid the point.
    """

    suggestion_id: str | None = None
    params: dict[str, Value]
    values: dict[str, float] = Field(default_factory=dict)
    run_uid: str | None = None
    ok: bool = True
    extra: dict[str, Any] = Field(default_factory=dict)
