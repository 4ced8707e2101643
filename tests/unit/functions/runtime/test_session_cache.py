"""The session cache keeps models loaded, and evicts idle ones over its memory budget."""

from __future__ import annotations

import pytest

from functions.runtime.models import LoadedModel, ModelKey
from functions.runtime.session_cache import SessionCache

MB = 1 << 20


class Loader:
    """Loads fake models of a given size and counts the loads."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.loads: list[str] = []

    def __call__(self, key: ModelKey) -> LoadedModel:
        self.loads.append(key.name)
        return LoadedModel(key=key, runner=object(), size_bytes=self.sizes[key.name], load_ms=1.0)  # type: ignore[arg-type]


def test_a_model_loads_once_and_is_reused() -> None:
    loader = Loader({"a": MB})
    cache = SessionCache(load=loader, budget_bytes=10 * MB)

    cache.preload([ModelKey("a", "1")])
    with cache.use(ModelKey("a", "1")) as first, cache.use(ModelKey("a", "1")) as second:
        assert first is second

    assert loader.loads == ["a"]


def test_over_budget_the_least_recently_used_idle_model_goes_first() -> None:
    loader = Loader({"a": 4 * MB, "b": 4 * MB, "c": 4 * MB})
    cache = SessionCache(load=loader, budget_bytes=9 * MB)
    cache.preload([ModelKey("a", "1"), ModelKey("b", "1")])
    with cache.use(ModelKey("a", "1")):
        pass  # a is now more recently used than b

    with cache.use(ModelKey("c", "1")):
        pass

    assert cache.loaded() == [ModelKey("a", "1"), ModelKey("c", "1")]
    assert cache.evictions == 1
    assert cache.used_bytes() == 8 * MB


def test_a_model_in_use_is_never_evicted() -> None:
    loader = Loader({"a": 6 * MB, "b": 6 * MB})
    cache = SessionCache(load=loader, budget_bytes=8 * MB)

    with cache.use(ModelKey("a", "1")) as busy, cache.use(ModelKey("b", "1")):
        # Both stay while both serve: over budget beats failing a request.
        assert set(cache.loaded()) == {ModelKey("a", "1"), ModelKey("b", "1")}
        assert busy.key == ModelKey("a", "1")

    with cache.use(ModelKey("a", "1")):
        pass
    assert loader.loads == ["a", "b"]


def test_an_evicted_model_is_loaded_again_when_asked_for() -> None:
    loader = Loader({"a": 6 * MB, "b": 6 * MB})
    cache = SessionCache(load=loader, budget_bytes=8 * MB)

    for name in ["a", "b", "a"]:
        with cache.use(ModelKey(name, "1")):
            pass

    assert loader.loads == ["a", "b", "a"]
    assert cache.loaded() == [ModelKey("a", "1")]


def test_a_failed_load_leaves_the_cache_usable() -> None:
    loader = Loader({"a": MB})
    cache = SessionCache(load=loader, budget_bytes=8 * MB)

    with pytest.raises(KeyError), cache.use(ModelKey("missing", "1")):
        pass
    with cache.use(ModelKey("a", "1")) as model:
        assert model.key.name == "a"
