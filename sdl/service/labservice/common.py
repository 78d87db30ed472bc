"""What every part of :class:`sdl.service.service.LabService` shares: the system principal,
the CSV cell guard and the "forbidden unless" check."""

from __future__ import annotations

import logging
from typing import Any

from sdl.service.auth import Principal
from sdl.service.errors import Forbidden

log = logging.getLogger("sdl.service.service")  # one logger for the whole service, as before the split

SYSTEM = Principal("", "system", "admin", "")


def csv_cell(v: Any) -> Any:
    """A value for a CSV cell that a spreadsheet will not run as a formula (OWASP: text starting
    with = + - @ tab or CR gets a leading quote); numbers stay numbers."""
    if v is None:
        return ""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise Forbidden(msg)
