"""A run, or a whole campaign, as a NeXus/HDF5 file (``nexusformat``), built from the
store's event-model documents only, so any stored run can be exported at any time.

One ``NXentry`` per run::

    /<entry>:NXentry        title, entry_identifier(_uuid) = run uid, experiment_identifier =
                            proposal, collection_identifier = campaign, start/end_time, duration,
                            program_name = sdl
      sample:NXsample       name = sample id, description = the parameters (JSON)
      instrument:NXinstrument   name = instrument; one NXcollection per device with its
                            configuration (units kept)
      data:NXdata           the primary stream: one field per data key, first axis the event
                            (seq_num, time); signal = the richest data key; an array signal gets
                            its axis from the device's configuration when one matches in length
      <stream>:NXdata       every other stream, the same way
      parameters:NXcollection   the suggested parameters (what the agent asked for), slot
      provenance:NXnote     the agent's provenance (JSON): agent, model, acquisition, why
      reduction:NXnote      how the run is reduced to objective values (JSON)
      observation:NXcollection  status, reason, ok and the reduced values
      documents:NXnote      every event-model document of the run (JSON lines), lossless

A campaign file holds one such entry per run (``run_0000`` ...) and an entry
``campaign`` with the spec (NXnote) and the observations table (NXdata: objective
against experiment number). :func:`validate` checks a file against the NeXus base
classes with ``nxvalidate`` (its NXDL definitions ship inside the package: offline).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import tempfile
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sdl.errors import InvalidInput

UTC = dt.timezone.utc


def _nx():
    try:
        import nexusformat.nexus as nx
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise RuntimeError("NeXus export needs nexusformat and h5py: pip install 'sdl[data]'") from exc
    return nx


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, UTC).isoformat()


def _is_uuid(s: str) -> bool:
    try:
        uuidlib.UUID(s)
        return True
    except (ValueError, TypeError, AttributeError):
        return False


def _array(values: list, dtype: str) -> np.ndarray:
    """Event values of one data key as one array (first axis: the event)."""
    if dtype == "string" or any(isinstance(v, str) for v in values):
        return np.array([("" if v is None else str(v)).encode() for v in values], dtype="S")
    arr = np.asarray([np.nan if v is None else v for v in values])
    if arr.dtype == object:  # ragged arrays: keep them as JSON text
        return np.array([json.dumps(v).encode() for v in values], dtype="S")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    return arr


def _field(nx: Any, value: Any, units: str | None = None, **attrs: Any):
    f = nx.NXfield(value)
    if units:
        f.attrs["units"] = units
    for k, v in attrs.items():
        if v is not None:
            f.attrs[k] = v
    return f


def _json_note(nx: Any, data: Any, description: str, author: str | None = None,
               kind: str = "application/json"):
    note = nx.NXnote()
    note["type"] = kind
    note["description"] = description
    if author:
        note["author"] = author
    note["data"] = data if isinstance(data, str) else json.dumps(data, sort_keys=True, default=str)
    return note


def _streams(docs: list[tuple[str, dict]]) -> dict[str, tuple[list[dict], list[dict]]]:
    """Stream name -> (its descriptors, its events in order)."""
    desc_stream: dict[str, str] = {}
    out: dict[str, tuple[list[dict], list[dict]]] = {}
    for name, doc in docs:
        if name == "descriptor":
            stream = doc.get("name", "primary")
            desc_stream[doc["uid"]] = stream
            out.setdefault(stream, ([], []))[0].append(doc)
        elif name == "event":
            stream = desc_stream.get(doc.get("descriptor"), "primary")
            out.setdefault(stream, ([], []))[1].append(doc)
        elif name == "event_page":
            stream = desc_stream.get(doc.get("descriptor"), "primary")
            n = len(doc.get("seq_num", []))
            for i in range(n):
                out.setdefault(stream, ([], []))[1].append({
                    "seq_num": doc["seq_num"][i], "time": doc["time"][i],
                    "data": {k: v[i] for k, v in doc["data"].items()}})
    return out


def _stream_data(nx: Any, descriptors: list[dict], events: list[dict], t0: float | None):
    """One stream as NXdata, or None when it has no events."""
    if not events:
        return None
    keys: dict[str, dict] = {}
    config: dict[str, dict] = {}
    for d in descriptors:
        keys.update(d.get("data_keys", {}))
        config.update(d.get("configuration", {}))
    data = nx.NXdata()
    data["seq_num"] = _field(nx, np.asarray([e.get("seq_num", i + 1) for i, e in enumerate(events)], dtype=np.int64))
    times = np.asarray([e.get("time", np.nan) for e in events], dtype=float)
    data["time"] = _field(nx, times - (t0 if t0 is not None else 0.0), "s",
                          start=_iso(t0) if t0 is not None else None)
    rank: dict[str, int] = {}
    for k, dk in keys.items():
        values = [e.get("data", {}).get(k) for e in events]
        arr = _array(values, dk.get("dtype", "number"))
        data[k] = _field(nx, arr, dk.get("units"), source=dk.get("source"))
        rank[k] = arr.ndim if arr.dtype.kind in "fiu" else 0
    numeric = [k for k in keys if rank.get(k, 0) >= 1]
    if not numeric:
        return data
    hinted = [f for d in descriptors for h in (d.get("hints") or {}).values() for f in h.get("fields", [])]
    signal = max(numeric, key=lambda k: (rank[k], k in hinted))
    axes = ["seq_num"]
    arr = data[signal].nxvalue
    if arr.ndim >= 2:
        obj = keys[signal].get("object_name")
        axis_name = None
        for name, value in ((config.get(obj) or {}).get("data") or {}).items():
            if isinstance(value, list) and len(value) == arr.shape[1] and name not in keys:
                dk = ((config.get(obj) or {}).get("data_keys") or {}).get(name, {})
                data[name] = _field(nx, np.asarray(value, dtype=float), dk.get("units"), source=dk.get("source"))
                axis_name = name
                break
        axes.append(axis_name or ".")
        axes += ["."] * (arr.ndim - 2)
    data.attrs["signal"] = signal
    data.attrs["axes"] = axes
    for i, a in enumerate(axes):
        if a != ".":
            data.attrs[f"{a}_indices"] = i
    return data


def run_entry(store: Any, run_uid: str, *, proposal: str | None = None,
              observation: Any | None = None, run_row: Any | None = None):
    """One run of the store as an NXentry (see the module docstring for the layout)."""
    nx = _nx()
    docs = store.documents(run_uid)
    if not docs:
        raise InvalidInput("run_uid", "no such run in the store (or it has no documents)", run_uid)
    start = next((d for n, d in docs if n == "start"), {})
    stop = next((d for n, d in docs if n == "stop"), None)
    t0 = start.get("time")
    t1 = None if stop is None else stop.get("time")
    instrument = start.get("instrument") or ""
    prop = proposal if proposal is not None else (start.get("proposal") or "")
    entry = nx.NXentry()
    entry["title"] = f"{start.get('plan_name', 'run')} on {instrument or 'an instrument'}" + (
        f", campaign {start['campaign_id']}" if start.get("campaign_id") else "")
    entry["entry_identifier"] = run_uid
    if _is_uuid(run_uid):
        entry["entry_identifier_uuid"] = run_uid
    if prop:
        entry["experiment_identifier"] = prop
    if start.get("campaign_id"):
        entry["collection_identifier"] = start["campaign_id"]
        entry["collection_description"] = "an autonomous campaign of sdl: one entry per run"
    if t0 is not None:
        entry["start_time"] = _iso(t0)
    if t1 is not None:
        entry["end_time"] = _iso(t1)
        if t0 is not None:
            entry["duration"] = _field(nx, np.int64(round(t1 - t0)), "s")  # NX_INT in NXentry
    from sdl import __version__ as sdl_version

    entry["program_name"] = _field(nx, "sdl", None, version=sdl_version,
                                   configuration=start.get("plan_name"))

    sample = nx.NXsample()
    sample["name"] = str(start.get("sample_id") or "")
    if start.get("params"):
        sample["description"] = json.dumps(start["params"], sort_keys=True)
    entry["sample"] = sample

    inst = nx.NXinstrument()
    inst["name"] = instrument
    streams = _streams(docs)
    seen: set[str] = set()
    for descs, _ in streams.values():
        for d in descs:
            for dev, cfg in (d.get("configuration") or {}).items():
                if dev in seen or not cfg.get("data"):
                    continue
                seen.add(dev)
                coll = nx.NXcollection()
                for k, v in cfg["data"].items():
                    dk = (cfg.get("data_keys") or {}).get(k, {})
                    arr = _array([v], dk.get("dtype", "number"))[0]
                    coll[k] = _field(nx, arr, dk.get("units"), source=dk.get("source"))
                inst[dev] = coll
    entry["instrument"] = inst

    for stream, (descs, events) in streams.items():
        group = _stream_data(nx, descs, events, t0)
        if group is not None:
            entry["data" if stream == "primary" else stream] = group

    params = dict(start.get("params") or {})
    if isinstance(start.get("slot"), int):
        params.setdefault("slot", start["slot"])
    if params:  # NXcollection: free names (NXparameters defines only "term")
        p = nx.NXcollection()
        for k, v in params.items():
            p[k] = _field(nx, v if isinstance(v, str) else np.asarray(v))
        entry["parameters"] = p
    prov = start.get("provenance")
    if prov:
        entry["provenance"] = _json_note(nx, prov, prov.get("reason") or "why the agent chose this point",
                                         author=prov.get("agent"))
    if start.get("reduction"):
        entry["reduction"] = _json_note(nx, start["reduction"], "how the run is reduced to objective values")
    obs = nx.NXcollection()
    if run_row is not None:
        obs["status"] = run_row.status
        if run_row.reason:
            obs["reason"] = run_row.reason
    elif stop is not None:
        obs["status"] = stop.get("exit_status", "")
    if observation is not None:
        obs["ok"] = np.int8(bool(observation.ok))
        for k, v in observation.values.items():
            obs[k] = _field(nx, float("nan") if v is None else float(v))
        if observation.extra.get("error"):
            obs["error"] = str(observation.extra["error"])
    entry["observation"] = obs
    lines = "\n".join(json.dumps({"name": n, "doc": d}, sort_keys=True) for n, d in docs)
    entry["documents"] = _json_note(nx, lines, "every event-model document of the run, one per line",
                                    kind="application/x-ndjson")
    return entry


def _root(nx: Any, entries: Iterable[tuple[str, Any]], path: Path):
    from sdl import __version__ as sdl_version

    root = nx.NXroot()
    for name, e in entries:
        root[name] = e
    root.attrs["creator"] = "sdl"
    root.attrs["creator_version"] = sdl_version
    root.attrs["file_time"] = dt.datetime.now(UTC).isoformat()
    root.attrs["file_name"] = path.name
    root.attrs["default"] = next(iter(root.entries), "")
    return root


def write_run(store: Any, run_uid: str, path: str | Path, *, proposal: str | None = None) -> Path:
    """One run as a NeXus file with one entry, ``entry``."""
    nx = _nx()
    path = Path(path)
    obs = _observation_of(store, run_uid)
    row = _run_row(store, run_uid)
    entry = run_entry(store, run_uid, proposal=proposal, observation=obs, run_row=row)
    _root(nx, [("entry", entry)], path).save(str(path), mode="w")
    return path


def _run_row(store: Any, run_uid: str):
    from sdl.store import RunRow

    with store.session() as s:
        return s.get(RunRow, run_uid)


def _observation_of(store: Any, run_uid: str):
    row = _run_row(store, run_uid)
    if row is None or row.campaign_id is None:
        return None
    return next((o for o in store.observations(row.campaign_id) if o.run_uid == run_uid), None)


def write_campaign(store: Any, campaign_id: str, path: str | Path, *, proposal: str | None = None) -> Path:
    """A campaign as a NeXus file: ``run_NNNN`` per run, and ``campaign`` (spec, observations)."""
    nx = _nx()
    path = Path(path)
    camp = store.campaign(campaign_id)
    observations = store.observations(campaign_id)
    by_run = {o.run_uid: o for o in observations if o.run_uid}
    entries: list[tuple[str, Any]] = []
    for i, r in enumerate(store.runs(campaign_id)):
        if not store.documents(r.uid):
            continue
        entries.append((f"run_{i:04d}", run_entry(store, r.uid, proposal=proposal,
                                                  observation=by_run.get(r.uid), run_row=r)))
    summary = nx.NXentry()
    summary["title"] = f"campaign {campaign_id}" + (f": {camp.name}" if camp.name else "")
    summary["collection_identifier"] = campaign_id
    summary["collection_description"] = f"{len(entries)} runs; the entries run_NNNN hold each run"
    prop = proposal if proposal is not None else (camp.spec.get("proposal") or "")
    if prop:
        summary["experiment_identifier"] = prop
    summary["start_time"] = camp.created_at.isoformat()
    summary["program_name"] = "sdl"
    summary["spec"] = _json_note(nx, camp.spec, f"the campaign spec; status {camp.status}")
    if observations:
        table = nx.NXdata()
        table["experiment"] = _field(nx, np.arange(len(observations), dtype=np.int64))
        names: list[str] = []
        for o in observations:
            names += [k for k in o.values if k not in names]
        for k in names:
            table[k] = _field(nx, np.asarray([o.values.get(k, math.nan) for o in observations], dtype=float))
        pnames: list[str] = []
        for o in observations:
            pnames += [k for k, v in o.params.items() if k not in pnames and isinstance(v, (int, float))]
        for k in pnames:
            if k not in names:
                table[k] = _field(nx, np.asarray([o.params.get(k, math.nan) for o in observations], dtype=float))
        table["ok"] = _field(nx, np.asarray([int(o.ok) for o in observations], dtype=np.int8))
        objective = ((camp.spec.get("objectives") or [{}])[0] or {}).get("name") or (names[0] if names else None)
        if objective in names:
            table.attrs["signal"] = objective
            table.attrs["axes"] = ["experiment"]
            table.attrs["experiment_indices"] = 0
        summary["observations"] = table
    entries.append(("campaign", summary))
    _root(nx, entries, path).save(str(path), mode="w")
    return path


def to_bytes(writer: Any, *args: Any, **kwargs: Any) -> bytes:
    """Run ``write_run`` / ``write_campaign`` into a temporary file and return its bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.nxs"
        writer(*args, path, **kwargs)
        return path.read_bytes()


# ---------------------------------------------------------------------- checks
_validate_lock = threading.Lock()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelname.lower(), record.getMessage()))


def _nxvalidate():
    """Import nxvalidate; its log handler asks for the terminal's width at import, which
    fails without a terminal (CI, a service): give it a width while it imports."""
    import os
    import sys

    if "nxvalidate.validate" not in sys.modules:
        real = os.get_terminal_size

        def size(*args: Any) -> os.terminal_size:
            try:
                return real(*args)
            except OSError:
                return os.terminal_size((200, 50))

        os.get_terminal_size = size
        try:
            import nxvalidate.validate  # noqa: F401
        except ImportError as exc:  # pragma: no cover
            raise RuntimeError("validation needs nxvalidate: pip install nxvalidate") from exc
        finally:
            os.get_terminal_size = real
    return sys.modules["nxvalidate.validate"]


def validate(path: str | Path) -> dict[str, Any]:
    """Check a NeXus file against the base classes with ``nxvalidate`` (offline: the NXDL
    definitions ship inside the package). Returns counts of warnings and errors and
    the messages."""
    nxv = _nxvalidate()
    with _validate_lock:
        logger = nxv.logger
        old_level, old_handlers, old_prop = logger.level, list(logger.handlers), logger.propagate
        collect = _Collect()
        logger.handlers = [collect]
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        logger.total = {"warning": 0, "error": 0}
        try:
            nxv.validate_file(str(path))
        finally:
            total = dict(logger.total)
            logger.handlers = old_handlers
            logger.setLevel(old_level)
            logger.propagate = old_prop
    messages = [(lvl, m.strip()) for lvl, m in collect.messages if lvl in ("warning", "error") and m.strip()]
    return {"warnings": total["warning"], "errors": total["error"], "messages": messages}


def read_documents(path: str | Path, entry: str = "entry") -> list[tuple[str, dict]]:
    """The event-model documents kept in an entry (read back with nexusformat)."""
    nx = _nx()
    with nx.nxopen(str(path), "r") as root:
        text = str(root[entry]["documents"]["data"].nxvalue)
    return [(d["name"], d["doc"]) for d in map(json.loads, io.StringIO(text).read().splitlines()) if d]
