"""HTTP side of the data views: ``GET /api/runs/{uid}/nexus``,
``GET /api/campaigns/{campaign_id}/nexus`` and ``GET /api/tiled`` (where the runs are in
Tiled). Who may download is decided by the service's existing checks (the same as
``/api/runs/{uid}`` and the campaign export): anything the caller may not read answers 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from sdl.service.errors import ServiceError

_NEXUS = {200: {"content": {"application/x-hdf5": {}}, "description": "a NeXus/HDF5 file"},
          501: {"description": "nexusformat is not installed on the server"}}


class NotInstalled(ServiceError):
    """An optional part (nexusformat) is not installed where the service runs."""

    status = 501
    code = "not_implemented"


def data_router(svc: Any, principal: Any) -> APIRouter:
    """The router; ``principal`` is the app's ``Depends(principal)``."""
    from sdl.data_views import nexus
    from sdl.service.auth import Principal

    api = APIRouter(prefix="/api", tags=["data"])

    def _check() -> None:
        try:
            nexus._nx()
        except RuntimeError as exc:
            raise NotInstalled(str(exc)) from None

    def _file(data: bytes, name: str) -> Response:
        return Response(data, media_type="application/x-hdf5",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @api.get("/runs/{uid}/nexus", responses=_NEXUS)
    def run_nexus(uid: str, p: Principal = principal) -> Response:
        run = svc.run_json(p, uid, documents=False)  # 404 unless the caller may read it
        _check()
        data = nexus.to_bytes(nexus.write_run, svc.store, uid, proposal=run.get("proposal_id") or "")
        return _file(data, f"{uid}.nxs")

    @api.get("/campaigns/{campaign_id}/nexus", responses=_NEXUS)
    def campaign_nexus(campaign_id: str, p: Principal = principal) -> Response:
        row = svc._campaign_readable(p, campaign_id)  # 404 unless the caller may read it
        _check()
        data = nexus.to_bytes(nexus.write_campaign, svc.store, campaign_id, proposal=row.proposal_id)
        return _file(data, f"{campaign_id}.nxs")

    @api.get("/tiled")
    def tiled(p: Principal = principal) -> dict:
        """Where every run is also readable through Tiled (sdl serve --tiled / --tiled-url)."""
        views = getattr(svc, "data_views", None)
        if views is None:
            return {"enabled": False, "url": None}
        return views.describe(staff=p.is_staff)

    return api
