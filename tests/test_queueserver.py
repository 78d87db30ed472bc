"""The bluesky-queueserver backend against a real RE Manager.

The session starts, on loopback ports of its own: a Redis server (Debian's
``redis-server``, nothing saved to disk), a bluesky 0MQ proxy, and
``start-re-manager`` with a copy of the queue server's built-in simulated profile
collection plus one startup file that subscribes its RunEngine to a
``bluesky.callbacks.zmq.Publisher`` on the proxy (as a beamline's startup code
does). Nothing here imitates the manager: every test talks to it over 0MQ, and
the fixtures kill the manager, the proxy and Redis at the end.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

#: set by .ci/run: a missing redis-server or queue server fails these tests instead of skipping them
REQUIRED = bool(os.environ.get("SDL_REQUIRE_QUEUESERVER"))


def _missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what}, and SDL_REQUIRE_QUEUESERVER is set", pytrace=False)
    pytest.skip(what, allow_module_level=True)


try:
    import bluesky_queueserver
    import bluesky_queueserver_api  # noqa: F401
except ImportError as exc:
    _missing(f"{exc.name} is not installed (pip: bluesky-queueserver, bluesky-queueserver-api; the test extra)")

import zmq  # noqa: E402
import zmq.utils.monitor  # noqa: E402

from sdl.backends import InstrumentBackend, RunOutcome  # noqa: E402
from sdl.backends.queueserver import (  # noqa: E402
    TOKEN_KEY,
    QueueServerBackend,
    QueueServerUnreachable,
)
from sdl.errors import InvalidInput  # noqa: E402
from sdl.testing import free_port, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(120)

LOOP = "127.0.0.1"


# ------------------------------------------------------------------------- processes


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process this module started, and its children (it leads its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever the group left behind (the manager's worker process)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait_port(port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float = 30.0) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection((LOOP, port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        wait_until(listening, timeout, interval=0.1, what=f"{what} to listen on {port}", proc=proc)
    except AssertionError as exc:  # its output went to the log
        raise AssertionError(f"{exc}\n{_tail(log)}") from None


@pytest.fixture(scope="session")
def redis_addr(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        _missing("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = folder / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", LOOP, "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_port(port, proc, log, "redis-server")
        yield f"{LOOP}:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def zmq_proxy(tmp_path_factory):
    """A bluesky 0MQ proxy (bluesky-0MQ-proxy): (in address, out address)."""
    in_port, out_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("proxy") / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from bluesky.commandline.zmq_proxy import main; main()",
             "--in-address", f"tcp://{LOOP}:{in_port}", "--out-address", f"tcp://{LOOP}:{out_port}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_port(out_port, proc, log, "bluesky-0MQ-proxy")
        yield f"tcp://{LOOP}:{in_port}", f"tcp://{LOOP}:{out_port}"
    finally:
        _stop(proc)


PUBLISHER_STARTUP = '''\
# Added by sdl's tests, as a beamline's startup code would: publish the documents.
from bluesky.callbacks.zmq import Publisher

RE.subscribe(Publisher({address!r}))
'''


BEAMLINE_STEP = '''\
# A beamline's own measurement plan, as its startup code would define it (sdl's worker sends
# sdl's "autonomous_step" here through plan_names). det reads exp(-m**2 / 2) at motor position m.
import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp


def beamline_step(A: float, B: float, C: float, temperature: float, exposure: float = 1.0):
    """Move to the temperature's motor position, expose, read det."""
    @bpp.run_decorator(md={"plan_name": "beamline_step"})
    def inner():
        yield from bps.mv(motor, (temperature - 430.0) / 50.0)
        yield from bps.sleep(exposure)
        yield from bps.trigger_and_read([det, motor])

    yield from inner()


def gauss_at(x: float, repeats: int = 1):
    """Move the motor to x and read det (what a plug-in instrument's plan maps to)."""
    @bpp.run_decorator(md={"plan_name": "gauss_at"})
    def inner():
        yield from bps.mv(motor, x)
        for _ in range(repeats):
            yield from bps.trigger_and_read([det, motor])

    yield from inner()
'''


def beamline_det(temperature: float) -> float:
    """What the profile's det reads after beamline_step at this temperature."""
    import math

    return math.exp(-(((temperature - 430.0) / 50.0) ** 2) / 2)


@pytest.fixture(scope="session")
def re_manager(tmp_path_factory, redis_addr, zmq_proxy):
    """A real RE Manager on the built-in simulated profile collection: its addresses."""
    exe = shutil.which("start-re-manager")
    if exe is None:
        _missing("start-re-manager is not installed (pip package bluesky-queueserver, test extra)")
    folder = tmp_path_factory.mktemp("re_manager")
    profile = folder / "profile"
    shutil.copytree(
        Path(bluesky_queueserver.__file__).parent / "profile_collection_sim", profile,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (profile / "90-sdl-publisher.py").write_text(PUBLISHER_STARTUP.format(address=zmq_proxy[0]))
    (profile / "91-beamline-step.py").write_text(BEAMLINE_STEP)
    # the manager validates items against this list before its environment is open: list the new plan
    lister = shutil.which("qserver-list-plans-devices")
    if lister is None:
        _missing("qserver-list-plans-devices is not installed (pip package bluesky-queueserver, test extra)")
    subprocess.run([lister, "--startup-dir", str(profile), "--file-dir", str(profile)], check=True,
                   capture_output=True, timeout=120)
    control, info = free_port(), free_port()
    log = folder / "re_manager.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "--startup-dir", str(profile),
             "--zmq-control-addr", f"tcp://{LOOP}:{control}",
             "--zmq-info-addr", f"tcp://{LOOP}:{info}", "--zmq-publish-console", "ON",
             "--redis-addr", redis_addr, "--redis-name-prefix", f"sdl_test_{os.getpid()}",
             "--update-existing-plans-devices", "NEVER"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_port(control, proc, log, "start-re-manager", timeout=60)
        yield {
            "zmq_control_addr": f"tcp://{LOOP}:{control}",
            "zmq_info_addr": f"tcp://{LOOP}:{info}",
            "zmq_data_addr": zmq_proxy[1],
            "log": log,
        }
    finally:
        _stop(proc)


@pytest.fixture
def backend(re_manager):
    b = QueueServerBackend(
        "qs-sim", re_manager["zmq_control_addr"], re_manager["zmq_info_addr"], re_manager["zmq_data_addr"],
        timeout=10.0, open_timeout=90.0, stream_timeout=10.0, plan_names={"measure": "count"},
    )
    yield b
    try:
        # nothing of sdl's may be left in the beamline's queue, whatever the test did
        leftover = [it for it in b.api.queue_get()["items"] if TOKEN_KEY in (it.get("meta") or {})]
        assert leftover == [], f"sdl left items in the manager's queue: {[it['item_uid'] for it in leftover]}"
        assert b.api.status(reload=True)["manager_state"] in ("idle",), "the manager was left busy"
    finally:
        b.close()


class Recorder:
    """on_document: keeps (arrival time, name, doc)."""

    def __init__(self):
        self.docs: list[tuple[float, str, dict]] = []
        self.first_event = threading.Event()

    def __call__(self, name: str, doc: dict) -> None:
        self.docs.append((time.time(), name, doc))
        if name in ("event", "event_page"):
            self.first_event.set()

    @property
    def names(self) -> list[str]:
        return [n for _, n, _ in self.docs]

    def one(self, name: str) -> dict:
        found = [d for _, n, d in self.docs if n == name]
        assert len(found) == 1, f"expected one {name} document, got {self.names}"
        return found[0]


# ------------------------------------------------------------------------- 0MQ helpers


def _wait_handshake(sock: zmq.Socket, monitor: zmq.Socket, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor.poll(100):
            if zmq.utils.monitor.recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
    raise RuntimeError("no 0MQ handshake")


class DelayingRelay:
    """A real 0MQ hop between the proxy and the backend that holds every message back.

    Stands for a slow network: the manager's history says the item finished while
    its documents are still on the way.
    """

    def __init__(self, upstream: str, delay: float):
        self.delay = delay
        self.address = f"tcp://{LOOP}:{free_port()}"
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        monitor = self._sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(upstream)
        _wait_handshake(self._sub, monitor)
        self._sub.disable_monitor()
        monitor.close(0)
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.bind(self.address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        pending: collections.deque = collections.deque()
        while not self._stop.is_set():
            if self._sub.poll(10):
                pending.append((time.monotonic() + self.delay, self._sub.recv()))
            while pending and pending[0][0] <= time.monotonic():
                self._pub.send(pending.popleft()[1])

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sub.close(0)
        self._pub.close(0)
        self._ctx.term()


# ------------------------------------------------------------------------- tests


def test_plans_are_the_managers_allowed_plans(backend):
    assert isinstance(backend, InstrumentBackend)
    plans = backend.plans()
    assert {"count", "scan", "list_scan", "marked_up_count"} <= set(plans)
    assert "measure" in plans  # sdl's name mapped onto the manager's count
    assert not [p for p in plans if p.startswith("_")]


def test_count_runs_and_streams_its_documents(backend):
    rec = Recorder()
    md = {"sdl_item_id": "item-7", "proposal": "p-42", "campaign_id": "c-1"}
    started = time.monotonic()
    outcome = backend.run("count", {"detectors": ["det1", "det2"], "num": 3}, md, rec)
    print(f"count on the RE Manager: {time.monotonic() - started:.2f} s (environment opened if needed)")
    assert outcome == RunOutcome("success", outcome.run_uids, "")
    assert len(outcome.run_uids) == 1
    assert rec.names == ["start", "descriptor", "event", "event", "event", "stop"]
    start = rec.one("start")
    assert start["uid"] == outcome.run_uids[0]
    assert start["plan_name"] == "count"
    assert {k: start[k] for k in md} == md  # sdl's metadata reached the start document
    assert start[TOKEN_KEY]
    descriptor = rec.one("descriptor")
    assert descriptor["run_start"] == start["uid"]
    assert {"det1", "det2"} <= set(descriptor["data_keys"])
    events = [d for _, n, d in rec.docs if n == "event"]
    assert [e["seq_num"] for e in events] == [1, 2, 3]
    assert all(e["descriptor"] == descriptor["uid"] for e in events)
    stop = rec.one("stop")
    assert stop["run_start"] == start["uid"] and stop["exit_status"] == "success"
    assert stop["num_events"] == {"primary": 3}
    # the manager's record agrees
    entry = backend.api.history_get()["items"][-1]
    assert entry["result"]["exit_status"] == "completed" and entry["result"]["run_uids"] == outcome.run_uids


def test_sdl_plan_name_maps_to_the_managers(backend):
    rec = Recorder()
    outcome = backend.run("measure", {"detectors": ["det"], "num": 1}, {"sdl_item_id": "item-8"}, rec)
    assert outcome.exit_status == "success"
    assert rec.one("start")["plan_name"] == "count"


def test_failing_plan_gives_fail_with_the_managers_message(backend):
    rec = Recorder()
    # accepted by the manager's validation (a list of delays is allowed), fails in the plan
    outcome = backend.run("count", {"detectors": ["det1"], "num": 3, "delay": [0.1]}, {"sdl_item_id": "i-9"}, rec)
    assert outcome.exit_status == "fail"
    assert outcome.reason == "ValueError: num=3 but delays only provides 1 entries"
    assert len(outcome.run_uids) == 1
    stop = rec.one("stop")
    assert stop["exit_status"] == "fail" and "delays only provides 1 entries" in stop["reason"]
    # the manager pushed the failed item back to its queue; the backend took it out (fixture checks)


def test_refused_parameters_name_the_parameter(backend):
    with pytest.raises(InvalidInput) as err:
        backend.run("count", {"detectors": ["det1"], "num": "many"}, {}, Recorder())
    assert err.value.field == "num"
    assert "valid integer" in err.value.message and backend.zmq_control_addr in err.value.message

    with pytest.raises(InvalidInput) as err:
        backend.run("count", {"detectors": ["det1"], "nmu": 3}, {}, Recorder())
    assert err.value.field == "nmu" and "unexpected keyword argument" in err.value.message

    with pytest.raises(InvalidInput) as err:
        backend.run("count", {"num": 3}, {}, Recorder())
    assert err.value.field == "detectors", err.value

    with pytest.raises(InvalidInput) as err:
        backend.run("no_such_plan", {}, {}, Recorder())
    assert err.value.field == "plan" and "no_such_plan" in err.value.message

    with pytest.raises(InvalidInput) as err:
        backend.run("count", {"detectors": ["det1"]}, {"when": object()}, Recorder())
    assert err.value.field == "md"


def test_abort_of_a_long_plan(backend):
    rec = Recorder()

    def abort_after_first_event():
        assert rec.first_event.wait(60)
        time.sleep(0.3)
        backend.abort("stopped by the operator")

    aborter = threading.Thread(target=abort_after_first_event, daemon=True)
    aborter.start()
    started = time.monotonic()
    # 200 readings 0.1 s apart: 20 s if nothing stops it
    outcome = backend.run("count", {"detectors": ["det1"], "num": 200, "delay": 0.1}, {"sdl_item_id": "i-10"}, rec)
    elapsed = time.monotonic() - started
    aborter.join(5)
    assert outcome.exit_status == "abort"
    assert outcome.reason == "stopped by the operator"
    assert len(outcome.run_uids) == 1
    stop = rec.one("stop")
    assert stop["exit_status"] == "abort"
    events = [d for _, n, d in rec.docs if n == "event"]
    assert 1 <= len(events) < 200
    assert elapsed < 18, f"abort took {elapsed:.1f} s"
    assert backend.api.history_get()["items"][-1]["result"]["exit_status"] == "aborted"


def test_an_error_in_on_document_withdraws_the_plan(backend):
    """If sdl cannot take the documents (store down), the measurement does not go on unrecorded."""

    def broken_store(name, doc):
        if name == "event":
            raise RuntimeError("store is down")

    with pytest.raises(RuntimeError, match="store is down"):
        backend.run("count", {"detectors": ["det1"], "num": 200, "delay": 0.1}, {"sdl_item_id": "i-14"}, broken_store)
    last = backend.api.history_get()["items"][-1]
    assert last["meta"]["sdl_item_id"] == "i-14" and last["result"]["exit_status"] == "aborted"
    # the fixture checks that the manager is idle and nothing of sdl's is left queued


def test_queued_behind_a_stopped_queue_waits_and_abort_withdraws_it(backend):
    """A beamline user's item waits in the stopped queue: sdl neither runs it nor jumps it."""
    api = backend.api
    if not api.status(reload=True)["worker_environment_exists"]:  # alone with -k: open it first
        api.environment_open()
        api.wait_for_condition(lambda st: st["worker_environment_exists"] and st["manager_state"] == "idle", timeout=90)
    theirs = backend.api.item_add({"item_type": "plan", "name": "count", "kwargs": {"detectors": ["det2"]}})
    their_uid = theirs["item"]["item_uid"]
    try:
        result: list[RunOutcome] = []
        runner = threading.Thread(
            target=lambda: result.append(backend.run("count", {"detectors": ["det1"]}, {"sdl_item_id": "i-13"}, Recorder())),
            daemon=True,
        )
        history_before = backend.api.status(reload=True)["items_in_history"]
        runner.start()
        items = wait_until(lambda: len(its := backend.api.queue_get()["items"]) == 2 and its, 20, interval=0.05,
                           what="sdl's item queued behind theirs")
        assert [it["item_uid"] for it in items][0] == their_uid and TOKEN_KEY in items[1].get("meta", {})
        time.sleep(1.0)  # sdl must not start the stopped queue: nothing runs
        status = backend.api.status(reload=True)
        assert status["manager_state"] == "idle" and status["items_in_history"] == history_before
        backend.abort("campaign cancelled")
        runner.join(10)
        assert result == [RunOutcome("abort", [], "campaign cancelled")]
        assert [it["item_uid"] for it in backend.api.queue_get()["items"]] == [their_uid]
    finally:
        backend.api.item_remove(uid=their_uid)


def test_documents_lagging_the_history_still_arrive(backend, re_manager):
    relay = DelayingRelay(re_manager["zmq_data_addr"], delay=2.0)
    slow = QueueServerBackend(
        "qs-slow", re_manager["zmq_control_addr"], None, relay.address, timeout=10.0, stream_timeout=10.0
    )
    try:
        rec = Recorder()
        outcome = slow.run("count", {"detectors": ["det1"], "num": 2}, {"sdl_item_id": "i-11"}, rec)
        assert outcome.exit_status == "success", outcome
        assert rec.names == ["start", "descriptor", "event", "event", "stop"]
        finished_at = slow.api.history_get()["items"][-1]["result"]["time_stop"]
        stop_arrived = [t for t, n, _ in rec.docs if n == "stop"][0]
        assert stop_arrived > finished_at + 1.0  # the stream really lagged the history
    finally:
        slow.close()
        relay.close()


def test_documents_that_never_come_are_reported(re_manager):
    # a 0MQ publisher that answers the handshake but carries nothing of the manager's
    ctx = zmq.Context()
    silent = ctx.socket(zmq.PUB)
    address = f"tcp://{LOOP}:{free_port()}"
    silent.bind(address)
    b = QueueServerBackend("qs-deaf", re_manager["zmq_control_addr"], None, address, timeout=10.0, stream_timeout=1.0)
    try:
        outcome = b.run("count", {"detectors": ["det1"], "num": 1}, {"sdl_item_id": "i-12"}, Recorder())
        assert outcome.exit_status == "fail"
        assert len(outcome.run_uids) == 1
        assert "did not all arrive" in outcome.reason and address in outcome.reason
    finally:
        b.close()
        silent.close(0)
        ctx.term()


def test_unreachable_manager_raises_within_the_timeout():
    address = f"tcp://{LOOP}:{free_port()}"
    b = QueueServerBackend("qs-gone", address, None, f"tcp://{LOOP}:{free_port()}", timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(QueueServerUnreachable) as err:
            b.plans()
        assert time.monotonic() - started < 5
        assert address in str(err.value) and "start-re-manager" in str(err.value)
        started = time.monotonic()
        with pytest.raises(QueueServerUnreachable):
            b.run("count", {"detectors": ["det1"]}, {}, Recorder())
        assert time.monotonic() - started < 5
    finally:
        b.close()


def test_unreachable_data_proxy_raises_before_anything_is_queued(re_manager):
    data = f"tcp://{LOOP}:{free_port()}"
    b = QueueServerBackend("qs-nodata", re_manager["zmq_control_addr"], None, data, timeout=1.0)
    try:
        history_before = b.api.status(reload=True)["items_in_history"]
        with pytest.raises(QueueServerUnreachable) as err:
            b.run("count", {"detectors": ["det1"]}, {}, Recorder())
        assert data in str(err.value)
        status = b.api.status(reload=True)
        assert status["items_in_queue"] == 0 and status["items_in_history"] == history_before
    finally:
        b.close()


# ------------------------------------------------------------- sdl worker on the manager


def test_instrument_config_names_what_the_queueserver_backend_needs():
    from sdl.errors import InvalidInput
    from sdl.service.settings import InstrumentConfig, load_settings

    with pytest.raises(ValueError, match="queueserver settings"):
        InstrumentConfig(name="sim-xrd", backend="queueserver")
    with pytest.raises(InvalidInput) as err:
        load_settings(instruments=[{"name": "sim-xrd", "backend": "queueserver", "queueserver": {
            "control_addr": "tcp://127.0.0.1:1", "data_addr": "tcp://127.0.0.1:2",
            "reduction": {"name": "no-such-reduction"}}}])
    assert "reduction" in str(err.value) and "scalar" in str(err.value)  # names the allowed ones
    with pytest.raises(InvalidInput) as err:
        load_settings(instruments=[{"name": "sim-xrd", "backend": "epics-magic"}])
    assert "backend" in err.value.field and "queueserver" in str(err.value)


@pytest.fixture(scope="module")
def qs_facility(re_manager, tmp_path_factory):
    """The service (no RunEngine for sim-xrd) and an `sdl worker` process whose instrument
    runs its plans on the RE Manager: {"lab", "worker", "config"}."""
    import json

    from sdl.service import crashtest
    from sdl.service.server import LiveServer
    from sdl.service.settings import load_settings
    from sdl.service.testing import Lab, scratch_settings

    config = {
        "instruments": [{
            "name": "sim-xrd", "external": True, "backend": "queueserver",
            "queueserver": {
                "control_addr": re_manager["zmq_control_addr"], "info_addr": re_manager["zmq_info_addr"],
                "data_addr": re_manager["zmq_data_addr"], "timeout_s": 10, "open_timeout_s": 90,
                "plan_names": {"autonomous_step": "beamline_step"},
                "reduction": {"name": "scalar", "params": {"field": "det", "objective": "fom"}},
            },
        }],
        "heartbeat_s": 0.3, "lease_timeout_s": 10, "event_poll_s": 0.1,
    }
    tmp_path = tmp_path_factory.mktemp("qs_facility")
    cfg_path = tmp_path / "facility.json"
    cfg_path.write_text(json.dumps(config))
    settings = scratch_settings(tmp_path, load_settings(cfg_path).instruments, heartbeat_s=0.3,
                                lease_timeout_s=10, event_poll_s=0.1)
    lab = Lab(LiveServer(settings).start())
    worker = crashtest.Proc("worker-qs", [sys.executable, "-m", "sdl.cli", "worker", "--instrument", "sim-xrd",
                                          "--store", settings.store_url, "--config", str(cfg_path),
                                          "--worker-id", "t-qs"], tmp_path, {"PYTHONUNBUFFERED": "1"})
    try:
        crashtest.wait_for(lambda: any(w.id == "t-qs" and w.state == "idle"
                                       for w in lab.service.dispatcher.workers()), 60, "the worker", [worker])
        yield {"lab": lab, "worker": worker, "config": cfg_path}
    finally:
        code = worker.terminate(30)
        tail = worker.tail()
        worker.close()
        lab.close()
        lab.server.stop()
        assert code == 0, tail


def _manager_history(re_manager) -> list[dict]:
    from bluesky_queueserver_api.zmq import REManagerAPI

    api = REManagerAPI(zmq_control_addr=re_manager["zmq_control_addr"], timeout_recv=10)
    try:
        return api.history_get()["items"]
    finally:
        api.close()


def test_sdl_worker_runs_experiments_on_the_re_manager(qs_facility, re_manager):
    from sdl.client import ServiceError
    from sdl.service.crashtest import XRD

    lab = qs_facility["lab"]
    alice = lab.user("qs-alice")
    prop = lab.proposal(alice, ["sim-xrd"])
    points = [{**XRD, "temperature": t} for t in (380.0, 430.0, 500.0)]
    ids = [alice.submit(prop["id"], "sim-xrd", {**p, "exposure": 0.05})["id"] for p in points]
    for item_id, point in zip(ids, points):
        item = alice.wait(item_id, timeout=120)
        assert item["status"] == "done", (item, qs_facility["worker"].tail())
        # reduced by sdl from the manager's own documents: det at the motor position the plan chose
        assert item["result"]["values"]["fom"] == pytest.approx(beamline_det(point["temperature"]), rel=1e-9)
        docs = alice.documents(item_id)
        assert [d["name"] for d in docs] == ["start", "descriptor", "event", "stop"]
        start = docs[0]["doc"]
        assert start["plan_name"] == "beamline_step" and start["sdl_plan"] == "autonomous_step"
        assert start["queue_item_id"] == item_id
        assert start["worker"] == "t-qs" and start["params"] == point and TOKEN_KEY in start
        assert docs[2]["doc"]["data"]["motor"] == pytest.approx((point["temperature"] - 430) / 50)
        assert docs[3]["doc"]["exit_status"] == "success"
    # the manager ran exactly these, with the parameters sdl validated
    mine = {h["meta"]["queue_item_id"]: h for h in _manager_history(re_manager)
            if (h.get("meta") or {}).get("queue_item_id") in ids}
    assert set(mine) == set(ids)
    assert all(h["name"] == "beamline_step" and h["result"]["exit_status"] == "completed" for h in mine.values())
    assert mine[ids[1]]["kwargs"] == {**points[1], "exposure": 0.05}
    # the service refuses what sdl's schema refuses, before the manager sees it
    with pytest.raises(ServiceError) as err:
        alice.submit(prop["id"], "sim-xrd", {**XRD, "temperature": 9999.0})
    assert err.value.field is not None and "temperature" in err.value.field


def test_campaign_steps_run_on_the_re_manager(qs_facility):
    lab = qs_facility["lab"]
    bob = lab.user("qs-bob")
    prop = lab.proposal(bob, ["sim-xrd"])
    camp = bob.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 4, "seed": 1,
                                            "exposure": 0.05}, start=True)
    final = bob.wait_campaign(camp["id"], timeout=180)
    assert final["state"] == "completed", (final, qs_facility["worker"].tail())
    rows = bob.table(camp["id"])
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert len(rows) == 4, rows
    for row in rows:  # every observation is det at the suggested temperature, measured on the manager
        assert row["fom"] == pytest.approx(beamline_det(row["temperature"]), rel=1e-9), row


def test_abort_over_http_aborts_the_plan_on_the_manager(qs_facility, re_manager):
    from sdl.service.crashtest import XRD, wait_for

    lab = qs_facility["lab"]
    carol = lab.user("qs-carol")
    sci = lab.user("qs-sci", role="scientist")
    prop = lab.proposal(carol, ["sim-xrd"])
    item_id = carol.submit(prop["id"], "sim-xrd", {**XRD, "exposure": 120.0})["id"]
    wait_for(lambda: [d for d in carol.documents(item_id) if d["name"] == "start"], 60, "the run to start",
             [qs_facility["worker"]])
    t0 = time.monotonic()
    sci.abort(item_id, reason="wrong sample")
    item = carol.wait(item_id, timeout=60)
    assert time.monotonic() - t0 < 30
    assert item["status"] == "aborted" and "wrong sample" in item["error"], item
    docs = carol.documents(item_id)
    assert docs[0]["name"] == "start" and docs[-1]["name"] == "stop"
    assert docs[-1]["doc"]["exit_status"] == "abort"  # closed by the manager's RunEngine
    entry = [h for h in _manager_history(re_manager) if (h.get("meta") or {}).get("queue_item_id") == item_id]
    assert entry and entry[-1]["result"]["exit_status"] in ("aborted", "stopped"), entry
    wait_for(lambda: carol.instrument("sim-xrd")["status"]["state"] == "idle", 30, "the worker idle again",
             [qs_facility["worker"]])


# ------------------------------------------------ a plug-in instrument on the RE Manager
@pytest.fixture(scope="module")
def qs_plugin(tmp_path_factory, re_manager):
    """The Python-profile instrument ``gauss-scan`` (examples/profiles) served with the
    queueserver backend: its plan ``count_at`` runs as the manager's ``gauss_at``, and sdl
    reduces the manager's documents with the instrument's own reduction."""
    import json

    from sdl import registry
    from sdl.service import crashtest
    from sdl.service.server import LiveServer
    from sdl.service.settings import load_settings
    from sdl.service.testing import Lab, scratch_settings

    profile = str(Path(__file__).resolve().parents[1] / "examples" / "profiles" / "ophyd_sim_profile.py")
    old = os.environ.get("SDL_PROFILE")
    os.environ["SDL_PROFILE"] = profile
    registry.reset()
    config = {"instruments": [{
        "name": "gauss-scan", "external": True, "backend": "queueserver",
        "queueserver": {
            "control_addr": re_manager["zmq_control_addr"], "info_addr": re_manager["zmq_info_addr"],
            "data_addr": re_manager["zmq_data_addr"], "timeout_s": 10, "open_timeout_s": 90,
            "plan_names": {"count_at": "gauss_at"},
        },
    }]}
    tmp_path = tmp_path_factory.mktemp("qs_plugin")
    cfg_path = tmp_path / "facility.json"
    cfg_path.write_text(json.dumps(config))
    settings = scratch_settings(tmp_path, load_settings(cfg_path).instruments, heartbeat_s=0.3,
                                lease_timeout_s=10, event_poll_s=0.1)
    lab = Lab(LiveServer(settings).start())
    worker = crashtest.Proc("worker-qs-plugin", [
        sys.executable, "-m", "sdl.cli", "worker", "--instrument", "gauss-scan", "--store", settings.store_url,
        "--config", str(cfg_path), "--worker-id", "t-qs-plugin", "--profile", profile],
        tmp_path, {"PYTHONUNBUFFERED": "1"})
    try:
        crashtest.wait_for(lambda: any(w.id == "t-qs-plugin" and w.state == "idle"
                                       for w in lab.service.dispatcher.workers()), 60, "the worker", [worker])
        yield {"lab": lab, "worker": worker}
    finally:
        worker.terminate(30)
        worker.close()
        lab.close()
        lab.server.stop()
        if old is None:
            os.environ.pop("SDL_PROFILE", None)
        else:
            os.environ["SDL_PROFILE"] = old
        registry.reset()


def test_a_plugin_instrument_runs_on_the_re_manager(qs_plugin):
    import math

    lab = qs_plugin["lab"]
    dana = lab.user("qs-dana")
    prop = lab.proposal(dana, ["gauss-scan"])
    schema = dana.instrument("gauss-scan")["plans"]["count_at"]
    assert set(schema["properties"]) == {"x", "repeats"}
    item = dana.submit(prop["id"], "gauss-scan", {"x": 0.5, "repeats": 2})
    done = dana.wait(item["id"], timeout=120)
    assert done["status"] == "done", (done, qs_plugin["worker"].tail())
    # the manager's det at x, reduced by sdl with the instrument's own stock reduction
    assert done["result"]["values"]["intensity"] == pytest.approx(math.exp(-0.5 ** 2 / 2), rel=1e-9)
    docs = dana.documents(item["id"])
    start = docs[0]["doc"]
    assert start["plan_name"] == "gauss_at" and start["sdl_plan"] == "count_at"
    assert start["reduction"]["name"] == "readings" and sum(d["name"] == "event" for d in docs) == 2
    camp = dana.create_campaign(prop["id"], {"instrument": "gauss-scan", "agent": "random", "budget": 3,
                                             "seed": 4}, start=True)
    final = dana.wait_campaign(camp["id"], timeout=180)
    assert final["state"] == "completed" and final["experiments"] == 3, (final, qs_plugin["worker"].tail())
