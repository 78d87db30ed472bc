"""An instrument backend that drives an existing bluesky-queueserver RE Manager.

A beamline that already runs ``start-re-manager`` joins sdl without changing it:
sdl's worker hands each queue item to the beamline's RE Manager through
bluesky-queueserver-api (0MQ control channel), and reads the run's documents
from the bluesky 0MQ proxy that the beamline's RunEngine publishes to.

How one :meth:`QueueServerBackend.run` goes:

1. The plan and its parameters go to the manager as a queue item (``item_add``),
   with sdl's metadata in the item's ``meta`` (the manager passes ``meta`` to the
   RunEngine, so it lands in every start document) plus a token,
   ``sdl_run_token``, that marks the item and its runs as sdl's. The manager
   validates the parameters; a refusal becomes :class:`sdl.errors.InvalidInput`
   naming the parameter, with the manager's own message.
2. The worker environment is opened if it is closed; the queue is started if the
   manager is idle and sdl's item is first in the queue.
3. While the item runs, every document of a run whose start document carries the
   token (and the descriptors, events, resources, data and stop that belong to
   it) goes to ``on_document`` in the order it was published.
4. The item's history entry gives the result: ``completed`` -> ``success``;
   ``failed`` / ``unknown`` -> ``fail`` with the last line of the traceback;
   ``aborted`` / ``stopped`` / ``halted`` -> ``abort``. Because the 0MQ stream
   may lag the history, the backend then waits (``stream_timeout``) for the stop
   document of every run the manager lists. A failed or aborted item that the
   manager pushes back to the front of its queue is removed again: retries are
   sdl's business.

Documents travel the way bluesky publishes them across processes: the
beamline's startup code subscribes ``bluesky.callbacks.zmq.Publisher`` to its
RunEngine, a ``bluesky-0MQ-proxy`` forwards, and this backend subscribes to the
proxy's out address with the same wire format ``RemoteDispatcher`` reads
(``prefix name payload``, pickled by default). Queue server 0.0.25 no longer has a
``--zmq-data-proxy-addr`` option (removed in bluesky-queueserver issue #320), so
the subscription lives in the startup code; see ``docs/queueserver.md``.
"""

from __future__ import annotations

import json
import logging
import pickle
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import zmq
import zmq.utils.monitor

from sdl.backends import RunOutcome
from sdl.errors import InvalidInput, SdlError

__all__ = [
    "QueueServerBackend",
    "QueueServerError",
    "QueueServerUnreachable",
    "TOKEN_KEY",
    "DocumentStream",
]

log = logging.getLogger(__name__)

#: start-document key that marks an item's runs as sdl's
TOKEN_KEY = "sdl_run_token"

_EXIT_MAP = {
    "completed": "success",
    "failed": "fail",
    "unknown": "fail",
    "aborted": "abort",
    "stopped": "abort",
    "halted": "abort",
}


class QueueServerError(SdlError, RuntimeError):
    """The RE Manager refused a request or could not do what was asked."""

    def __init__(self, message: str, manager_message: str = ""):
        self.manager_message = manager_message
        super().__init__(message)


class QueueServerUnreachable(QueueServerError, ConnectionError):
    """Nothing answered at the RE Manager's (or the 0MQ proxy's) address in time."""


# ---------------------------------------------------------------------------------------
# documents from a bluesky 0MQ proxy


def _normalize_address(address: str) -> str:
    return address if "://" in address else f"tcp://{address}"


class DocumentStream:
    """Subscriber to a bluesky 0MQ proxy, read on a thread of its own.

    Reads what ``bluesky.callbacks.zmq.Publisher`` sends (``prefix name payload``,
    the payload made by the publisher's serializer, ``pickle.dumps`` by default),
    as ``RemoteDispatcher`` does, but on a plain thread that can be stopped from
    outside and that knows whether the proxy is connected (a 0MQ socket monitor
    sees the handshake). Documents are kept only between :meth:`begin` and
    :meth:`end`; everything else published on the proxy is dropped.

    ``pickle.loads`` runs code chosen by whoever can publish to the proxy: keep
    the proxy on the beamline's control network, or pass a safer pair
    (``serializer``/``deserializer``) on both sides.
    """

    def __init__(self, address: str, *, prefix: bytes = b"", deserializer: Callable[[bytes], Any] = pickle.loads):
        if b" " in prefix:
            raise ValueError(f"prefix {prefix!r} may not contain b' '")
        self.address = _normalize_address(address)
        self._prefix = prefix
        self._deserializer = deserializer
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._sink: queue.Queue | None = None
        self._sink_lock = threading.Lock()
        self.dropped = 0  # messages that could not be decoded
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._loop, name=f"sdl-docs {self.address}", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(5)

    def begin(self) -> queue.Queue:
        """Start keeping documents; returns the queue they go to as ``(name, doc)``."""
        sink: queue.Queue = queue.Queue()
        with self._sink_lock:
            self._sink = sink
        return sink

    def end(self) -> None:
        """Stop keeping documents."""
        with self._sink_lock:
            self._sink = None

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.term()

    def _loop(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: a run's documents are the record
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
        )
        sock.setsockopt(zmq.SUBSCRIBE, self._prefix + b" " if self._prefix else b"")
        sock.connect(self.address)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        self._ready.set()
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if monitor in events:
                    evt = zmq.utils.monitor.recv_monitor_message(monitor)
                    if evt["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        self.connected.set()
                    else:
                        self.connected.clear()
                if sock in events:
                    while True:
                        try:
                            message = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(message)
        finally:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)

    def _handle(self, message: bytes) -> None:
        with self._sink_lock:
            sink = self._sink
        if sink is None:
            return
        try:
            prefix, name, payload = message.split(b" ", 2)
            if self._prefix and prefix != self._prefix:
                return
            doc = self._deserializer(payload)
            sink.put((name.decode(), doc))
        except Exception as exc:  # a foreign or broken message: count it, keep going
            self.dropped += 1
            log.warning("dropped an undecodable message from %s: %s", self.address, exc)


# ---------------------------------------------------------------------------------------
# which documents belong to sdl's runs


@dataclass
class _RunDocs:
    """Routes documents to the runs whose start carries the token."""

    token: str
    on_document: Callable[[str, dict], None]
    starts: list[str] = field(default_factory=list)
    stops: dict[str, dict] = field(default_factory=dict)
    descriptors: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def run_of(self, name: str, doc: dict) -> str | None:
        if name == "start":
            return doc.get("uid") if doc.get(TOKEN_KEY) == self.token else None
        if name in ("descriptor", "stop", "resource", "stream_resource"):
            run = doc.get("run_start")
        elif name in ("event", "event_page", "stream_datum"):
            run = self.descriptors.get(doc.get("descriptor"))
        elif name in ("datum", "datum_page"):
            run = self.resources.get(doc.get("resource"))
        else:
            run = None
        return run if run in self.starts else None

    def feed(self, name: str, doc: dict) -> None:
        run = self.run_of(name, doc)
        if run is None:
            return
        if name == "start":
            self.starts.append(run)
        elif name == "descriptor":
            self.descriptors[doc["uid"]] = run
        elif name in ("resource", "stream_resource"):
            self.resources[doc["uid"]] = run
        elif name == "stop":
            self.stops[run] = doc
        self.count += 1
        self.on_document(name, doc)

    def missing_stops(self, run_uids: list[str]) -> list[str]:
        return [u for u in dict.fromkeys([*run_uids, *self.starts]) if u not in self.stops]


# ---------------------------------------------------------------------------------------
# the backend


def _field_from_message(msg: str) -> str | None:
    """The plan parameter a queue-server validation message names, if any."""
    patterns = (
        r"validation errors? for \w+\n(\w+)",  # pydantic: the location follows the title
        r"unexpected keyword argument '(\w+)'",
        r"missing a required argument: '(\w+)'",
        r"multiple values for argument '(\w+)'",
        r"[Pp]arameter '(\w+)'",
    )
    for pattern in patterns:
        m = re.search(pattern, msg)
        if m:
            return m.group(1)
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class QueueServerBackend:
    """Runs sdl's plans on a bluesky-queueserver RE Manager (see the module docstring).

    Parameters
    ----------
    name:
        The instrument's name in sdl.
    zmq_control_addr:
        The manager's control address (``start-re-manager --zmq-control-addr``),
        e.g. ``tcp://beamline-host:60615``.
    zmq_info_addr:
        The manager's console/info address (``--zmq-info-addr``), or ``None``. Only
        used by :attr:`api`'s console monitor, for people who want the console.
    zmq_data_addr:
        The out address of the bluesky 0MQ proxy the beamline's RunEngine publishes
        its documents to, e.g. ``tcp://beamline-host:5578``.
    timeout:
        Seconds one request to the manager (or the first handshake with the proxy)
        may take before the address is reported unreachable.
    open_timeout:
        Seconds allowed for opening the worker environment.
    queue_timeout:
        Seconds sdl's item may wait in the manager's queue before it starts;
        ``None`` waits until it runs or is aborted.
    stream_timeout:
        Seconds to wait, after the manager has finished the item, for documents
        still in flight (the stop document of every run).
    abort_timeout:
        Seconds to wait for an immediate pause before the abort is sent anyway.
    poll_interval:
        Seconds between status requests to the manager while an item waits or runs
        (documents are passed on as they arrive, whatever this is).
    plan_names:
        sdl plan name -> the manager's plan name, for plans known under another
        name in sdl. Names not in the map are passed through.
    user, user_group:
        Who the manager records as submitting the items; the group decides which
        plans and devices are allowed (``user_group_permissions.yaml``).
    """

    def __init__(
        self,
        name: str,
        zmq_control_addr: str,
        zmq_info_addr: str | None,
        zmq_data_addr: str,
        *,
        timeout: float = 5.0,
        open_timeout: float = 120.0,
        queue_timeout: float | None = None,
        stream_timeout: float = 10.0,
        abort_timeout: float = 30.0,
        poll_interval: float = 0.2,
        plan_names: Mapping[str, str] | None = None,
        user: str = "sdl",
        user_group: str = "primary",
        zmq_public_key: str | None = None,
        data_prefix: bytes = b"",
        deserializer: Callable[[bytes], Any] = pickle.loads,
    ):
        try:
            from bluesky_queueserver_api.zmq import REManagerAPI
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise QueueServerError(
                "the queue-server backend needs bluesky-queueserver-api: pip install bluesky-queueserver-api"
            ) from exc
        self.name = name
        self.zmq_control_addr = _normalize_address(zmq_control_addr)
        self.zmq_info_addr = _normalize_address(zmq_info_addr) if zmq_info_addr else None
        self.zmq_data_addr = _normalize_address(zmq_data_addr)
        self.timeout = float(timeout)
        self.open_timeout = float(open_timeout)
        self.queue_timeout = queue_timeout
        self.stream_timeout = float(stream_timeout)
        self.abort_timeout = float(abort_timeout)
        self.poll_interval = float(poll_interval)
        self.plan_names = dict(plan_names or {})
        self.user = user
        self.user_group = user_group
        self.api = REManagerAPI(
            zmq_control_addr=self.zmq_control_addr,
            zmq_info_addr=self.zmq_info_addr,
            timeout_recv=self.timeout,
            timeout_send=self.timeout,
            zmq_public_key=zmq_public_key,
        )
        self._api_lock = threading.RLock()
        self._stream = DocumentStream(self.zmq_data_addr, prefix=data_prefix, deserializer=deserializer)
        self._state_lock = threading.Lock()
        self._running = False
        self._abort_reason: str | None = None
        self._closed = False

    # ----------------------------------------------------------------- manager calls
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        api = self.api
        with self._api_lock:
            try:
                return getattr(api, method)(*args, **kwargs)
            except api.RequestTimeoutError as exc:
                raise QueueServerUnreachable(
                    f"the RE Manager at {self.zmq_control_addr} did not answer {method!r} within "
                    f"{self.timeout:g} s: is start-re-manager running there, with --zmq-control-addr "
                    f"on that port?"
                ) from exc
            except api.RequestFailedError as exc:
                msg = str(exc.response.get("msg", "")) if isinstance(exc.response, Mapping) else str(exc)
                raise QueueServerError(
                    f"the RE Manager at {self.zmq_control_addr} refused {method!r}: {msg}", manager_message=msg
                ) from exc

    def _status(self) -> dict:
        return self._call("status", reload=True)

    # ----------------------------------------------------------------- protocol
    def plans(self) -> list[str]:
        """The manager's allowed plans for ``user_group``, plus the sdl names mapped onto them."""
        allowed = self._call("plans_allowed", reload=True, user_group=self.user_group)["plans_allowed"]
        names = set(allowed)
        names.update(alias for alias, target in self.plan_names.items() if target in allowed)
        return sorted(names)

    def abort(self, reason: str) -> None:
        """Ask the running :meth:`run` to stop its item (returns at once).

        The thread in :meth:`run` removes the item if it is still queued, or sends
        ``re_pause("immediate")`` and then ``re_abort()`` if it is running; the
        run's stop document then says ``abort``. Does nothing when nothing runs.
        """
        with self._state_lock:
            if self._running and self._abort_reason is None:
                self._abort_reason = reason or "aborted by sdl"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stream.close()
        try:
            self.api.close()
        except Exception:  # pragma: no cover - closing twice or a dead socket
            pass

    def __enter__(self) -> "QueueServerBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- run
    def run(self, plan: str, kwargs: dict, md: dict, on_document: Callable[[str, dict], None]) -> RunOutcome:
        """Run one plan on the manager; see the module docstring for the steps."""
        target = self.plan_names.get(plan, plan)
        kwargs = dict(kwargs or {})
        for label, value in (("kwargs", kwargs), ("md", md or {})):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    label,
                    "must hold JSON values only (numbers, strings, lists, dicts; devices by name) "
                    f"to reach the RE Manager: {exc}",
                ) from exc
        token = uuid.uuid4().hex
        meta = {**(md or {}), TOKEN_KEY: token}
        with self._state_lock:
            if self._running:
                raise QueueServerError(f"{self.name}: a plan is already running on this backend")
            self._running = True
            self._abort_reason = None
        docs = _RunDocs(token, on_document)
        sink = None
        submitting = False
        finished = False
        try:
            self._status()  # reachable at all?
            if not self._stream.wait_connected(self.timeout):
                raise QueueServerUnreachable(
                    f"no bluesky 0MQ proxy answered at {self.zmq_data_addr} within {self.timeout:g} s: "
                    "the run's documents could not be received (start bluesky-0MQ-proxy there, with the "
                    "beamline's RunEngine subscribed to bluesky.callbacks.zmq.Publisher on its in address)"
                )
            sink = self._stream.begin()
            submitting = True
            item_uid = self._submit(target, plan, kwargs, meta)
            result = self._wait_for_result(item_uid, token, sink, docs)
            finished = True
            if result is None:  # aborted before it started
                return RunOutcome("abort", [], self._abort_reason or "aborted")
            return self._finish(result, token, sink, docs)
        finally:
            self._stream.end()
            if submitting and not finished:
                self._cleanup_unfinished(token)
            with self._state_lock:
                self._running = False

    # ----------------------------------------------------------------- run: steps
    def _submit(self, target: str, plan: str, kwargs: dict, meta: dict) -> str:
        item = {"item_type": "plan", "name": target, "kwargs": kwargs, "meta": meta}
        try:
            reply = self._call("item_add", item, user=self.user, user_group=self.user_group)
        except QueueServerUnreachable:
            raise
        except QueueServerError as exc:
            msg = exc.manager_message or str(exc)
            if "not in the list of allowed plans" in msg:
                raise InvalidInput(
                    "plan",
                    f"{target!r} is not among the plans the RE Manager at {self.zmq_control_addr} allows "
                    f"user group {self.user_group!r} (see plans()); the manager says: {_last_line(msg)}",
                    plan,
                ) from exc
            if "validation failed" in msg.lower():
                field_name = _field_from_message(msg) or "kwargs"
                head = msg.split("\nPlan:")[0].strip()
                raise InvalidInput(
                    field_name,
                    f"the RE Manager at {self.zmq_control_addr} refused the parameters of {target!r}: {head}",
                    kwargs.get(field_name, ...) if field_name in kwargs else ...,
                ) from exc
            raise
        return reply["item"]["item_uid"]

    def _ensure_environment(self, status: dict) -> dict:
        """Open the worker environment if it is closed; returns a fresh status."""
        if status.get("worker_environment_exists"):
            return status
        deadline = time.monotonic() + self.open_timeout
        open_sent, open_sent_at = False, 0.0
        seen_creating = False
        while True:
            state = status.get("manager_state")
            seen_creating = seen_creating or state == "creating_environment"
            if status.get("worker_environment_exists") and state != "creating_environment":
                return status
            if state == "idle" and not status.get("worker_environment_exists"):
                # after environment_open the manager passes through creating_environment; back at
                # idle without an environment (or never leaving idle) means the opening failed
                if seen_creating or (open_sent and time.monotonic() - open_sent_at > 5.0):
                    raise QueueServerError(
                        f"the RE Manager at {self.zmq_control_addr} could not open its worker environment "
                        "(its startup code failed: see the manager's console output)"
                    )
                if not open_sent:
                    log.info("%s: opening the worker environment of %s", self.name, self.zmq_control_addr)
                    self._call("environment_open")
                    open_sent, open_sent_at = True, time.monotonic()
            if self._abort_requested():
                return status
            if time.monotonic() > deadline:
                raise QueueServerError(
                    f"the RE Manager at {self.zmq_control_addr} did not open its worker environment within "
                    f"{self.open_timeout:g} s"
                )
            time.sleep(self.poll_interval)
            status = self._status()

    def _abort_requested(self) -> str | None:
        with self._state_lock:
            return self._abort_reason

    def _drain(self, sink: queue.Queue, docs: _RunDocs, wait: float) -> None:
        """Pass on every document that has arrived, waiting up to ``wait`` s for the first."""
        try:
            name, doc = sink.get(timeout=wait) if wait > 0 else sink.get_nowait()
        except queue.Empty:
            return
        docs.feed(name, doc)
        while True:
            try:
                name, doc = sink.get_nowait()
            except queue.Empty:
                return
            docs.feed(name, doc)

    def _find_in_history(self, item_uid: str, token: str) -> dict | None:
        items = self._call("history_get")["items"]
        for item in reversed(items):
            if item.get("item_uid") == item_uid or (item.get("meta") or {}).get(TOKEN_KEY) == token:
                return item
        return None

    def _queue_items(self) -> list[dict]:
        return self._call("queue_get")["items"]

    def _wait_for_result(self, item_uid: str, token: str, sink: queue.Queue, docs: _RunDocs) -> dict | None:
        """Poll the manager until sdl's item is in its history; pass documents on meanwhile."""
        status = self._ensure_environment(self._status())
        history_uid = None
        submitted = time.monotonic()
        abort_stage = None  # None -> "pausing" -> "aborting"
        pause_sent_at = 0.0
        warned_behind = False
        seen_queue_uid = None
        while True:
            state = status.get("manager_state")
            running = status.get("running_item_uid") == item_uid
            reason = self._abort_requested()
            if state != "idle":
                seen_queue_uid = None  # look at the queue afresh when the manager is idle again

            if status.get("plan_history_uid") != history_uid:
                history_uid = status.get("plan_history_uid")
                entry = self._find_in_history(item_uid, token)
                if entry is not None:
                    return entry

            if reason is not None and not running and abort_stage is None:
                if self._remove_queued(token):
                    return None
            elif reason is not None and running:
                if abort_stage is None:
                    if state != "paused":
                        try:
                            self._call("re_pause", "immediate")
                        except QueueServerError as exc:  # finished meanwhile, or already pausing
                            log.info("%s: re_pause refused: %s", self.name, exc)
                    abort_stage, pause_sent_at = "pausing", time.monotonic()
                elif abort_stage == "pausing" and (
                    state == "paused" or time.monotonic() - pause_sent_at > self.abort_timeout
                ):
                    try:
                        self._call("re_abort")
                        abort_stage = "aborting"
                    except QueueServerError as exc:
                        log.info("%s: re_abort refused: %s", self.name, exc)
                        if time.monotonic() - pause_sent_at > self.abort_timeout:
                            abort_stage = "aborting"  # nothing more to try; wait for the history

            elif (
                state == "idle" and not running and status.get("worker_environment_exists")
                and status.get("plan_queue_uid") != seen_queue_uid
            ):
                # idle with sdl's item waiting: look at the queue (again only once it changed)
                seen_queue_uid = status.get("plan_queue_uid")
                queued = self._queue_items()
                mine = [i for i, it in enumerate(queued) if (it.get("meta") or {}).get(TOKEN_KEY) == token]
                if mine and mine[0] == 0:
                    try:
                        self._call("queue_start")
                    except QueueServerError as exc:  # someone else started it first
                        log.info("%s: queue_start refused: %s", self.name, exc)
                        seen_queue_uid = None
                elif mine and not warned_behind:
                    warned_behind = True
                    log.warning(
                        "%s: the queue of %s is stopped with %d item(s) ahead of sdl's; waiting for it "
                        "to be started", self.name, self.zmq_control_addr, mine[0],
                    )
            elif not status.get("worker_environment_exists") and state == "idle":
                status = self._ensure_environment(status)

            if (
                self.queue_timeout is not None
                and not running
                and abort_stage is None
                and time.monotonic() - submitted > self.queue_timeout
                and not docs.starts
            ):
                if self._remove_queued(token):
                    raise QueueServerError(
                        f"sdl's item waited more than {self.queue_timeout:g} s in the queue of the RE "
                        f"Manager at {self.zmq_control_addr} without starting; it was removed"
                    )

            # pass documents on as they come; ask the manager for its status every poll_interval
            next_poll = time.monotonic() + self.poll_interval
            while (remaining := next_poll - time.monotonic()) > 0:
                self._drain(sink, docs, remaining)
            status = self._status()

    def _remove_queued(self, token: str) -> bool:
        """Remove every queued item carrying ``token``; True if any was removed."""
        uids = [it["item_uid"] for it in self._queue_items() if (it.get("meta") or {}).get(TOKEN_KEY) == token]
        removed = False
        for uid in uids:
            try:
                self._call("item_remove", uid=uid)
                removed = True
            except QueueServerError as exc:  # started meanwhile
                log.info("%s: could not remove %s: %s", self.name, uid, exc)
        return removed

    def _finish(self, entry: dict, token: str, sink: queue.Queue, docs: _RunDocs) -> RunOutcome:
        result = entry.get("result") or {}
        status_word = result.get("exit_status", "unknown")
        exit_status = _EXIT_MAP.get(status_word, "fail")
        run_uids = list(result.get("run_uids") or [])
        # A failed or aborted item is pushed back to the front of the manager's queue (and in loop
        # mode a finished one to its back): sdl decides about retries, so take it out again.
        try:
            self._remove_queued(token)
        except QueueServerError as exc:
            log.warning("%s: could not tidy the manager's queue: %s", self.name, exc)

        # The 0MQ stream may lag the history: wait for every run's stop document.
        deadline = time.monotonic() + self.stream_timeout
        while docs.missing_stops(run_uids) and time.monotonic() < deadline:
            self._drain(sink, docs, min(self.poll_interval, max(0.0, deadline - time.monotonic())))
        self._drain(sink, docs, 0)
        for uid in docs.starts:  # runs seen on the stream but not (yet) in the manager's list
            if uid not in run_uids:
                run_uids.append(uid)

        if exit_status == "success":
            reason = ""
        elif exit_status == "fail":
            reason = _last_line(result.get("traceback", "")) or result.get("msg", "") or f"plan {status_word}"
        else:
            reason = self._abort_requested() or result.get("msg") or f"plan {status_word} at the RE Manager"
        missing = docs.missing_stops(run_uids)
        if missing:
            note = (
                f"the documents of run(s) {', '.join(missing)} did not all arrive from the 0MQ proxy at "
                f"{self.zmq_data_addr} within {self.stream_timeout:g} s after the RE Manager reported "
                f"{status_word!r} (is the beamline's RunEngine subscribed to a Publisher on that proxy?)"
            )
            if exit_status == "success":
                exit_status = "fail"
            reason = f"{reason}; {note}" if reason else note
        return RunOutcome(exit_status, run_uids, reason)

    def _cleanup_unfinished(self, token: str) -> None:
        """run() is leaving early (error, interrupt): leave nothing of sdl's running or queued.

        Found by token, so an item whose ``item_add`` reached the manager although its
        answer timed out is withdrawn as well.
        """
        try:
            running = self._call("queue_get").get("running_item") or {}
            if (running.get("meta") or {}).get(TOKEN_KEY) == token:
                item_uid = running.get("item_uid")
                if self._status().get("manager_state") != "paused":
                    self._call("re_pause", "immediate")
                    deadline = time.monotonic() + self.abort_timeout
                    while time.monotonic() < deadline and self._status().get("manager_state") != "paused":
                        time.sleep(self.poll_interval)
                self._call("re_abort")
                deadline = time.monotonic() + self.abort_timeout
                while time.monotonic() < deadline and self._status().get("running_item_uid") == item_uid:
                    time.sleep(self.poll_interval)
            self._remove_queued(token)
        except Exception as exc:  # best effort: the original error is what the caller must see
            log.warning("%s: could not withdraw sdl's item from %s: %s", self.name, self.zmq_control_addr, exc)
