"""Request bodies of the HTTP API (pydantic; unknown fields are refused, naming them)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sdl.campaign import CampaignSpec

Role = Literal["admin", "scientist", "user"]
ProposalKind = Literal["open", "proprietary", "coalition"]

_NAME = r"^[A-Za-z0-9_.@-]{1,100}$"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(Body):
    name: str = Field(pattern=_NAME, description="login name: letters, digits, _ . @ -")
    role: Role = "user"
    email: str = Field("", max_length=200)
    token_ttl_days: float | None = Field(None, gt=0, le=3650, description="lifetime of the first token")


class UserPatch(Body):
    role: Role | None = None
    active: bool | None = None


class TokenIn(Body):
    name: str = Field("", max_length=100)
    ttl_days: float | None = Field(None, gt=0, le=3650, description="default: the service's token_ttl_days")
    user_id: str | None = Field(None, max_length=32, description="admins only: a token for another user")


class Allocation(Body):
    experiments: int | None = Field(None, ge=1, le=10_000_000, description="experiments the proposal may run")
    hours: float | None = Field(None, gt=0, le=1_000_000, description="instrument hours the proposal may use")


class ProposalIn(Body):
    title: str = Field(min_length=1, max_length=300)
    abstract: str = Field("", max_length=20_000)
    kind: ProposalKind = "proprietary"
    coalition: str | None = Field(None, pattern=_NAME, description="name of the coalition (kind coalition)")
    instruments: list[str] = Field(min_length=1, max_length=50, description="instruments the proposal may use")
    allocation: Allocation = Field(default_factory=Allocation)
    members: list[str] = Field(default_factory=list, max_length=500, description="user names or ids to add")

    @model_validator(mode="after")
    def _coalition(self) -> "ProposalIn":
        if self.kind == "coalition" and not self.coalition:
            raise ValueError("coalition: a coalition proposal needs the coalition's name")
        if self.kind != "coalition" and self.coalition:
            raise ValueError("coalition: only kind 'coalition' takes a coalition name")
        return self


class ApprovalIn(Body):
    allocation: Allocation | None = None
    embargo_until: dt.datetime | None = Field(None, description="open proposals: data public after this (UTC)")
    dedicated: bool | None = Field(None, description="counts against the instruments' dedicated fraction")
    comment: str = Field("", max_length=2000)


class DecisionIn(Body):
    comment: str = Field("", max_length=2000)


class MemberIn(Body):
    user: str = Field(min_length=1, max_length=100, description="user name or id")
    role: Literal["member", "pi"] = "member"


class ExperimentIn(Body):
    proposal_id: str = Field(min_length=1, max_length=32)
    instrument: str = Field(min_length=1, max_length=60)
    plan: str | None = Field(None, min_length=1, max_length=60,
                             description="one of the instrument's plans; default: its default plan")
    parameters: dict[str, Any] = Field(description="the plan's parameters: see GET /api/instruments/{name}")
    priority: int = Field(0, ge=-10, le=10, description="order within the proposal's own queue (higher first)")
    note: str = Field("", max_length=2000)


class ReasonIn(Body):
    reason: str = Field("", max_length=2000)


class PauseIn(Body):
    immediate: bool = Field(True, description="also pause the running plan at its next checkpoint")
    reason: str = Field("", max_length=2000)


class ShareIn(Body):
    dedicated_fraction: float = Field(ge=0.0, le=1.0)


class CampaignIn(Body):
    proposal_id: str = Field(min_length=1, max_length=32)
    spec: CampaignSpec
    priority: int = Field(0, ge=-10, le=10)
    start: bool = Field(False, description="start it at once")


class PointIn(Body):
    parameters: dict[str, Any]
    reason: str = Field("", max_length=2000)
