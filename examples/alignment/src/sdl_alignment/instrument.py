"""The ``mirror-alignment`` instrument: devices, plan, reduction, space, objectives.

Devices are in-process doubles by default; with ``options = {"epics_prefix": "P:"}``
they are EPICS devices on the PVs the simulated IOC serves (``sdl ioc --instrument
mirror-alignment``) -- or a real mirror and camera with the same PV layout.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Signal
from ophyd.sim import SynAxis
from ophyd.status import Status

from sdl.plugin import Arg, BuildContext, Instrument
from sdl.space import Objective, RangeParameter, SearchSpace
from sdl_alignment import model

Frames = Annotated[int, Arg(1, 20, description="detector frames per point (averaged)")]


class SimCamera(Device):
    """In-process area detector: a frame of the beam through the aperture at each trigger."""

    image = Cpt(Signal, value=np.zeros(model.N * model.N), kind="hinted")

    def __init__(self, *args: Any, pitch: Any, bend: Any, seed: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pitch, self._bend = pitch, bend
        self._rng = np.random.default_rng(seed)

    def trigger(self):
        frame = model.image(float(self._pitch.position), float(self._bend.position), self._rng)
        self.image.put(frame.ravel())
        st = Status(self)
        st.set_finished()
        return st


class EpicsCamera(Device):
    """The same camera over Channel Access (area-detector style: Acquire, ArrayData)."""

    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind="omitted")
    image = Cpt(EpicsSignalRO, "ArrayData", kind="hinted")

    def trigger(self):
        return self.acquire.set(1)


def _epics_devices(prefix: str, connect: bool, timeout: float) -> tuple[Any, Any, Any]:
    pitch = EpicsSignal(prefix + "PITCH_RBV", write_pv=prefix + "PITCH", put_complete=True, name="pitch")
    bend = EpicsSignal(prefix + "BEND_RBV", write_pv=prefix + "BEND", put_complete=True, name="bend")
    camera = EpicsCamera(prefix + "CAM:", name="camera")
    if connect:
        from sdl.plugin import PluginError

        for dev in (pitch, bend, camera):
            try:
                dev.wait_for_connection(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - named
                raise PluginError("mirror-alignment", "options.epics_prefix", f"{dev.name} at {prefix!r} did not "
                                  f"connect within {timeout:g} s ({type(exc).__name__}); is `sdl ioc --instrument "
                                  f"mirror-alignment --prefix {prefix}` running?") from None
    return pitch, bend, camera


def build(ctx: BuildContext) -> Instrument:
    """Focusing mirror pitch and bend against an area detector (beam intensity and size)."""
    import bluesky.plans as bp

    from sdl.reduction import reduction_spec

    prefix = ctx.options.get("epics_prefix")
    if prefix:
        pitch, bend, camera = _epics_devices(prefix, bool(ctx.options.get("epics_connect", True)),
                                             float(ctx.options.get("epics_timeout", 5.0)))
    else:
        pitch, bend = SynAxis(name="pitch", value=3.0), SynAxis(name="bend", value=0.0)
        camera = SimCamera(name="camera", pitch=pitch, bend=bend, seed=ctx.seed)

    def align_shot(*, frames: Frames = 1, md: dict | None = None):
        """Take `frames` detector frames with the mirror at the point (one run)."""
        return (yield from bp.count([camera, pitch, bend], num=frames, md={"plan_name": "align_shot", **(md or {})}))

    def simulator(pv_prefix: str, sctx: BuildContext):
        from sdl_alignment.ioc import AlignmentIOC

        return AlignmentIOC(prefix=pv_prefix, seed=sctx.seed)

    return Instrument(
        name="mirror-alignment",
        description="Focusing mirror (pitch, bend) and an area detector: maximise intensity, minimise beam size",
        space=SearchSpace(parameters=[
            RangeParameter(name="pitch", lower=model.PITCH[0], upper=model.PITCH[1], units="mrad"),
            RangeParameter(name="bend", lower=model.BEND[0], upper=model.BEND[1], units=""),
        ]),
        objectives=[Objective(name="intensity", direction="maximize", units="counts"),
                    Objective(name="size", direction="minimize", units="um")],
        reduction=reduction_spec("beam_spot", field="camera_image", n=model.N, background=model.BACKGROUND,
                                 pixel_um=model.PIXEL_UM),
        plans={"align_shot": align_shot},
        dofs={"pitch": pitch, "bend": bend},
        devices={"pitch": pitch, "bend": bend, "camera": camera},
        truth=lambda p: model.truth(p)["intensity"],
        optimum={"intensity": model.best_intensity()} if ctx.options.get("optimum") else None,
        simulator=simulator,
        options=dict(ctx.options),
    )
