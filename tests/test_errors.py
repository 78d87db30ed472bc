"""sdl's errors cross process boundaries intact (a process pool sends them back pickled)."""

from __future__ import annotations

import pickle

import pytest

from sdl.backends.queueserver import QueueServerError, QueueServerUnreachable
from sdl.data_views.tiled_server import TiledServerError
from sdl.database import DatabaseError
from sdl.errors import DeviceFault, InvalidInput, SdlError
from sdl.plugin import PluginError
from sdl.service.errors import Conflict, NotFound


@pytest.mark.parametrize("err", [
    InvalidInput("budget", "at most 6", 10),
    InvalidInput("pool", "needs a header"),
    DeviceFault("robot", "dropped the sample"),
    PluginError("xrd", "plans", "not a generator function"),
    TiledServerError("did not start"),
    DatabaseError("unreachable"),
    QueueServerError("refused", manager_message="busy"),
    QueueServerUnreachable("nothing at tcp://127.0.0.1:1"),
    NotFound("no campaign 12"),
    Conflict("already running"),
], ids=lambda e: type(e).__name__)
def test_every_sdl_error_survives_pickling(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and isinstance(back, SdlError)
    assert str(back) == str(err) and back.args == err.args
    assert back.__dict__ == err.__dict__
    if isinstance(err, InvalidInput):
        assert back.to_dict() == err.to_dict()


def test_an_error_is_named_under_its_request_field_once():
    err = InvalidInput("budget", "at least 1", 0)
    spec = err.under("spec")
    assert (spec.field, spec.message, spec.value) == ("spec.budget", "at least 1", 0)
    assert str(spec) == "spec.budget: at least 1 (got 0)"
    assert spec.under("spec") is spec  # already there: not spec.spec.budget
    assert InvalidInput("parameters", "a dict").under("parameters").field == "parameters"
    assert InvalidInput("parametersX", "?").under("parameters").field == "parameters.parametersX"
