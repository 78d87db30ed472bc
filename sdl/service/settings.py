"""Service settings: ``SDL_*`` environment variables, an optional config file, overrides.

Precedence (highest first): explicit overrides (CLI options) > ``SDL_*`` environment
variables > the config file (JSON, or TOML if the name ends in ``.toml``; path from
``--config`` or ``SDL_CONFIG``) > defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sdl.builtins import DEFAULT_SERVICE_INSTRUMENTS
from sdl.database import INSTRUMENT_NAME_MAX
from sdl.errors import InvalidInput

DEFAULT_INSTRUMENTS = DEFAULT_SERVICE_INSTRUMENTS  # the demo's lab (sdl.builtins), when none is configured


class QueueServerConfig(BaseModel):
    """Where an existing bluesky-queueserver RE Manager runs an instrument's plans
    (:class:`sdl.backends.queueserver.QueueServerBackend`)."""

    model_config = ConfigDict(extra="forbid")

    control_addr: str = Field(description="the manager's --zmq-control-addr, e.g. tcp://bl-host:60615")
    data_addr: str = Field(description="out address of the bluesky 0MQ proxy the beamline's RunEngine publishes "
                                       "its documents to, e.g. tcp://bl-host:5578")
    info_addr: str | None = Field(None, description="the manager's --zmq-info-addr (console), optional")
    plan_names: dict[str, str] = Field(
        default_factory=dict,
        description="sdl plan name -> the manager's plan, e.g. {\"autonomous_step\": \"bl_measure\"}; "
                    "unmapped names are sent as they are",
    )
    reduction: dict | None = Field(
        None, description="how sdl reduces the manager's runs, e.g. {\"name\": \"scalar\", \"params\": "
                          "{\"field\": \"det\", \"objective\": \"fom\"}}; default: the instrument's own",
    )
    user: str = "sdl"
    user_group: str = "primary"
    timeout_s: float = Field(5.0, gt=0, description="one request to the manager")
    open_timeout_s: float = Field(120.0, gt=0, description="opening the worker environment")
    queue_timeout_s: float | None = Field(None, gt=0, description="sdl's item waiting in the manager's queue")
    stream_timeout_s: float = Field(10.0, gt=0, description="documents still in flight after the manager is done")

    @field_validator("reduction")
    @classmethod
    def _known_reduction(cls, v: dict | None) -> dict | None:
        if v is None:
            return v
        from sdl.reduction import reduction_spec

        if not isinstance(v.get("name"), str) or not isinstance(v.get("params", {}), dict):
            raise ValueError('write {"name": REDUCTION, "params": {...}}')
        return reduction_spec(v["name"], **v.get("params", {}))


class InstrumentConfig(BaseModel):
    """One instrument the service runs a worker for."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=INSTRUMENT_NAME_MAX, description="instrument name from the registry (sdl.instruments)")
    dedicated_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of this instrument's time reserved for dedicated proposals when both pools have work",
    )
    time_scale: float | None = Field(None, ge=0.0, le=10.0, description="simulation speed; default: the service's")
    seed: int | None = Field(None, ge=0, description="seed of the simulated lab; default: the service's")
    n_slots: int = Field(1000, ge=1, le=100_000, description="rack slots of the simulated lab")
    external: bool = Field(
        False, description="served by `sdl worker` processes (on their own hosts): the service only schedules "
                           "and observes it, and runs no RunEngine for it",
    )
    backend: Literal["runengine", "queueserver"] = Field(
        "runengine", description="who runs the plans: sdl's own RunEngine with the instrument's devices, or an "
                                 "existing bluesky-queueserver RE Manager (then `queueserver` says where)",
    )
    queueserver: QueueServerConfig | None = None
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the instrument's build options, set by the facility (campaign specs cannot): e.g. a table "
                    "pool's {\"objective\": \"yield:max\", \"ignore_columns\": [\"date\"]}",
    )

    def build(self, *, seed: int, time_scale: float, n_slots: int):
        """The instrument, built with this config's options; an error names the instrument and
        the settings field (``instruments[pool:/data/x.csv].options.objective``)."""
        from sdl.instruments import make_instrument

        try:
            return make_instrument(self.name, seed=seed, time_scale=time_scale, n_slots=n_slots, options=self.options)
        except InvalidInput as exc:
            field = exc.field.removeprefix("instrument_options").lstrip(".")
            # the table itself (missing, not CSV) is the name's fault; a column or option is an option's
            field = f"options.{field}" if field and field not in ("instrument", "options", "pool") else "name"
            raise InvalidInput(f"instruments[{self.name}].{field}", exc.message, exc.value) from None

    @model_validator(mode="after")
    def _backend_settings(self) -> "InstrumentConfig":
        if self.backend == "queueserver" and self.queueserver is None:
            raise ValueError("backend 'queueserver' needs the queueserver settings (control_addr, data_addr)")
        if self.backend != "queueserver" and self.queueserver is not None:
            raise ValueError("queueserver settings are given but backend is not 'queueserver'")
        return self

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from sdl.instruments import check_instrument_name

        return check_instrument_name(v)


def _default_store_url() -> str:
    return f"sqlite:///{Path('sdl-data/sdl.sqlite').resolve()}"


class ServiceSettings(BaseSettings):
    """Everything `sdl serve` needs. Every field is also an ``SDL_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="SDL_", extra="ignore")

    store_url: str = Field(default_factory=_default_store_url, description="SQLAlchemy URL of the record")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    instruments: Annotated[list[InstrumentConfig], NoDecode] = Field(
        default_factory=lambda: [InstrumentConfig(name=n) for n in DEFAULT_INSTRUMENTS],
        description="instruments to serve: names (comma-separated or a JSON list) or objects",
    )
    time_scale: float = Field(0.0, ge=0.0, le=10.0, description="0: instant simulation, 1: real time")
    seed: int = Field(0, ge=0)
    start_workers: bool = Field(True, description="run the scheduler and instrument workers in this process")
    external_workers: bool = Field(
        False, description="every instrument is served by `sdl worker` processes (as if each had external: true)"
    )
    event_poll_s: float = Field(0.2, gt=0, le=10, description="SQLite: how often the service polls for the "
                                "documents of `sdl worker` processes, and an idle worker for new items")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    rate_limit_per_minute: float = Field(1200.0, gt=0, description="requests per minute per token (429 beyond)")
    rate_limit_burst: int = Field(200, ge=1, description="requests a token may make at once")
    token_ttl_days: float = Field(90.0, gt=0, description="default lifetime of a new API token")
    admin_name: str = "admin"
    admin_token: SecretStr | None = Field(
        None, description="the first admin's token (default: a random one, printed once on first start)"
    )
    embargo_days: float = Field(365.0, ge=0, description="default embargo of open proposals' data after approval")
    lease_timeout_s: float = Field(60.0, gt=0, description="a running item without a heartbeat this long is recovered")
    heartbeat_s: float = Field(2.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="tries of an experiment interrupted by a dead worker")
    ws_queue_size: int = Field(5000, ge=10, description="events buffered per WebSocket client (oldest dropped)")
    # --- security (docs/http-api.md, "Threat model")
    rate_limit_per_address_per_minute: float = Field(
        6000.0, gt=0, description="requests per minute per client address, signed in or not (429 beyond)")
    rate_limit_address_burst: int = Field(1000, ge=1, description="requests one address may make at once")
    auth_failures_per_minute: float = Field(
        30.0, gt=0, description="requests with a wrong token per minute per client address (429 beyond)")
    auth_failures_burst: int = Field(30, ge=1)
    max_tokens_per_account: int = Field(20, ge=1, description="live (not revoked, not expired) tokens per account")
    max_streams_per_account: int = Field(20, ge=1, description="live streams (WebSockets) open at once per account")
    oidc_issuer: str | None = Field(None, description="OpenID Connect provider (issuer URL) to sign in with")
    oidc_client_id: str | None = Field(None, description="this service's client id at the provider")
    oidc_client_secret: SecretStr | None = Field(None, description="this service's client secret")
    oidc_redirect_url: str | None = Field(
        None, description="the callback address registered at the provider; default http://HOST:PORT/api/auth/callback")
    oidc_scopes: str = Field("openid profile email", description="scopes asked for at sign-in")
    oidc_create_accounts: bool = Field(
        False, description="a first sign-in creates a 'user' account linked to the provider's subject; otherwise "
                           "an admin links accounts first (POST /api/users/{id}/identities {\"subject\": ...})")
    oidc_token_ttl_days: float = Field(1.0, gt=0, description="lifetime of tokens issued at sign-in")
    oidc_clock_leeway_s: float = Field(30.0, ge=0, le=600, description="clock difference allowed with the provider")
    # every run also in Tiled (sdl.data_views; docs/data.md)
    tiled: bool = Field(False, description="start an embedded Tiled server and feed every run to it")
    tiled_url: str | None = Field(None, description="feed every run to this existing Tiled server instead")
    tiled_api_key: SecretStr | None = Field(None, description="API key the feed writes to tiled_url with")
    tiled_host: str = Field("127.0.0.1", description="address the embedded Tiled server listens on")
    tiled_port: int = Field(0, ge=0, le=65535, description="port of the embedded Tiled server (0: a free one)")
    tiled_folder: str | None = Field(None, description="catalog and files of the embedded Tiled server "
                                     "(default: a folder 'tiled' beside the SQLite store, or ./sdl-data/tiled)")
    tiled_access_tags: bool | None = Field(None, description="tag Tiled nodes with the proposal id (default: "
                                           "on for the embedded server, off for tiled_url)")

    @field_validator("instruments", mode="before")
    @classmethod
    def _parse_instruments(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                v = json.loads(text)
            else:
                v = [s.strip() for s in text.split(",") if s.strip()]
        if isinstance(v, (list, tuple)):
            v = [{"name": x} if isinstance(x, str) else x for x in v]
            names = [x["name"] if isinstance(x, dict) else getattr(x, "name", None) for x in v]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"instruments: each at most once (repeated: {dupes})")
        return v

    @model_validator(mode="after")
    def _one_tiled(self) -> "ServiceSettings":
        if self.tiled and self.tiled_url:
            raise ValueError("tiled: either an embedded Tiled server (tiled) or an existing one (tiled_url), "
                             "not both")
        return self

    def is_external(self, cfg: InstrumentConfig) -> bool:
        return bool(cfg.external or self.external_workers)

    def instrument(self, name: str) -> InstrumentConfig | None:
        for cfg in self.instruments:
            if cfg.name == name:
                return cfg
        return None


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput("config", f"cannot read the config file: {exc}", str(path)) from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("config", f"not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}", str(path)) from None
    if not isinstance(data, dict):
        raise InvalidInput("config", "must hold a mapping of setting names to values", str(path))
    return data


def load_settings(config: str | Path | None = None, **overrides: Any) -> ServiceSettings:
    """Settings from defaults < config file < ``SDL_*`` environment < non-None ``overrides``."""
    from pydantic import ValidationError

    config = config or os.environ.get("SDL_CONFIG") or None
    data: dict[str, Any] = read_config_file(config) if config else {}
    try:
        from_env = ServiceSettings()
        data.update({k: getattr(from_env, k) for k in from_env.model_fields_set})
        data.update({k: v for k, v in overrides.items() if v is not None})
        return ServiceSettings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        ctx = err.get("ctx", {}).get("error")
        if isinstance(ctx, InvalidInput):
            raise InvalidInput(loc, ctx.message, ctx.value) from None
        raise InvalidInput(loc, err["msg"].removeprefix("Value error, "), err.get("input", ...)) from None
