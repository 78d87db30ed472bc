"""The cache behind tokens and memberships: a change is seen at once, a raced lookup is not kept."""

from __future__ import annotations

from sdl.service.lookup_cache import LookupCache


def test_a_value_is_kept_until_a_change_empties_the_cache():
    cache: LookupCache[int] = LookupCache(ttl=60.0)
    loads = []
    heard = []
    cache.listeners.add(lambda: heard.append(1))

    def load():
        loads.append(1)
        return len(loads)

    assert cache.get("k", load) == 1 and cache.get("k", load) == 1 and len(loads) == 1
    assert cache.fresh("k") == (True, 1) and cache.fresh("other") == (False, None)
    cache.invalidate()
    assert heard == [1] and cache.fresh("k") == (False, None)
    assert cache.get("k", load) == 2


def test_a_lookup_that_raced_with_a_change_is_returned_but_not_kept():
    cache: LookupCache[str] = LookupCache(ttl=60.0)

    def load_during_a_change():
        cache.invalidate()  # e.g. the token is revoked while its row is being read
        return "stale"

    assert cache.get("k", load_during_a_change) == "stale"
    assert cache.fresh("k") == (False, None)  # the next request reads the database again
    assert cache.get("k", lambda: "new") == "new" and cache.fresh("k") == (True, "new")


def test_an_old_entry_is_read_again():
    cache: LookupCache[str] = LookupCache(ttl=0.0)
    cache.get("k", lambda: "a")
    assert cache.fresh("k") == (False, None) and cache.get("k", lambda: "b") == "b"
