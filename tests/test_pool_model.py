"""The pool model serves the bundled real datasets; only listed points exist."""

import pytest

from sdl.errors import InvalidInput
from sdl.sim_devices.pool import PoolModel


def test_p3ht_repeats_averaged_and_top_fraction():
    pool = PoolModel.bundled("p3ht")
    assert pool.inputs == ["p3ht_content", "d1_content", "d2_content", "d6_content", "d8_content"]
    assert len(pool) == 178 and pool.repeats.sum() == 233  # 233 rows, repeats averaged
    top = pool.top_indices(0.05)
    assert len(top) == 9
    worst_top = min(pool.values[i] for i in top)
    assert sum(v > worst_top for v in pool.values) == 8  # nothing outside the top beats it
    params, value = pool.best()
    assert pool.value(params) == value == pool.values.max()


def test_agnp_minimised():
    pool = PoolModel.bundled("agnp")
    params, value = pool.best()
    assert value == pool.values.min()
    assert pool.objective.direction == "minimize"


def test_point_not_in_pool_is_refused():
    pool = PoolModel.bundled("p3ht")
    point = pool.as_dict(0)
    point["p3ht_content"] += 0.5
    with pytest.raises(InvalidInput, match="only the 178 listed samples"):
        pool.value(point)
    with pytest.raises(InvalidInput, match="unknown dataset"):
        PoolModel.bundled("nope")
