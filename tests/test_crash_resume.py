"""Kill -9 a running campaign process, resume it: nothing lost, nothing measured twice."""

import signal
import subprocess
import sys

import pytest

from sdl.database import scratch_store_url
from sdl.store import Store
from sdl.testing import wait_until


def _sdl(*args):
    return [sys.executable, "-m", "sdl.cli", *args]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_campaign_resumes_without_loss_or_repeats(tmp_path, sig):
    url = scratch_store_url(tmp_path / "crash.sqlite")  # or a PostgreSQL database (conftest)
    cid = "crashtest"
    # time scale 0.005: each experiment takes about half a second, so the kill lands mid-run
    proc = subprocess.Popen(
        _sdl("campaign", "run", "--store", url, "--id", cid, "--instrument", "sim-xrd", "--agent", "sobol",
             "--budget", "7", "--seed", "1", "--time-scale", "0.005"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    store = Store(url)

    def mid_run():
        try:
            obs = store.observations(cid)
            running = [r for r in store.runs(cid) if r.status == "running"]
        except Exception:  # tables not created yet
            return False
        return len(obs) >= 2 and any(len(store.documents(r.uid)) >= 2 for r in running)

    wait_until(mid_run, 120, interval=0.05, what="the campaign mid-run", proc=proc)
    before = store.observations(cid)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    if sig == signal.SIGINT:
        said = proc.stdout.read()
        assert proc.returncode == 130, said
        # an abort on purpose: no bluesky "Run aborted" traceback, the way to go on instead
        assert "Traceback" not in said and "RequestAbort" not in said, said
        assert f"sdl campaign resume {cid}" in " ".join(said.split()), said
    else:
        assert proc.returncode == -signal.SIGKILL

    runs = store.runs(cid)
    open_runs = [r for r in runs if r.status in ("running", "interrupted")]
    if sig == signal.SIGINT:  # a clean stop: the run it cut short is marked at once, the campaign too
        assert all(r.status == "interrupted" for r in open_runs), [r.status for r in open_runs]
        assert store.campaign(cid).status == "interrupted"
        assert not [r for r in runs if r.status == "failed"], "Ctrl-C is not an experiment failure"
    # SIGKILL lands mid-run (checked above). Ctrl-C is delivered through the RunEngine, which
    # may let the run end first: then the stop comes between runs and none is left open.
    if sig == signal.SIGKILL or open_runs:
        assert open_runs, "the interrupted run must be kept"
        partial_uid = open_runs[0].uid
        partial_docs = store.documents(partial_uid)
        assert partial_docs and partial_docs[0][0] == "start"
    else:
        partial_uid = None

    done = subprocess.run(_sdl("campaign", "resume", cid, "--store", url), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    after = store.observations(cid)
    assert len(after) == 7
    # nothing lost: every observation made before the kill is still there, unchanged
    assert [o.model_dump() for o in after[: len(before)]] == [o.model_dump() for o in before]
    # nothing measured twice: one successful run and one observation per suggestion
    sids = [o.suggestion_id for o in after]
    assert len(set(sids)) == len(sids) == 7
    success = [r for r in store.runs(cid) if r.status == "success"]
    assert len(success) == 7 and len({r.suggestion_id for r in success}) == 7
    # the interrupted run is kept, marked, with its partial documents
    if partial_uid is not None:
        interrupted = {r.uid: r for r in store.runs(cid)}[partial_uid]
        assert interrupted.status == "interrupted"
        assert store.documents(partial_uid)[: len(partial_docs)] == partial_docs
    assert store.campaign(cid).status == "completed"
    store.close()
