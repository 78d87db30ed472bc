"""The record's one rule for JSON-safe values.

Event-model documents carry numpy arrays and scalars and may carry NaN or
infinity; JSON columns (SQLite and PostgreSQL alike) and the HTTP API need plain
JSON. Kept apart from :mod:`sdl.store` so that :mod:`sdl.database` (which the
store builds on) can use it without importing the store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Make event-model documents JSON-safe (numpy arrays and scalars, NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)
