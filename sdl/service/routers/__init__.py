"""The HTTP API, one router per resource (FastAPI's "bigger applications" layout).

Each module holds one module-level ``APIRouter``; :func:`sdl.service.api.create_app`
includes them in :data:`ROUTERS` order, then the routers built per app (sign-in, the data
views, the web app's additions). The service methods behind each router live in the
:mod:`sdl.service.labservice` module of the same name; docs/http-api.md "Code layout"
has the map.
"""

from __future__ import annotations

from sdl.service.routers import (accounts, campaigns, data, experiments, health, instruments, proposals, stream,
                                 usage)

#: the resource routers, in the order the app includes them
ROUTERS = [health.router, accounts.router, proposals.router, instruments.router, experiments.router,
           campaigns.router, data.router, usage.router]

__all__ = ["ROUTERS", "accounts", "campaigns", "data", "experiments", "health", "instruments", "proposals",
           "stream", "usage"]
