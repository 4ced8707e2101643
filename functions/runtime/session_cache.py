"""The per-execution-environment model cache.

Lambda keeps an execution environment alive between requests, so a model loaded once serves
every request that environment answers. The cache preloads the function's declared models at
init, keeps the ones in use, and when a load pushes it over its memory budget evicts the
least recently used idle models first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from functions.runtime.models import LoadedModel, ModelKey


class SessionCache:
    def __init__(
        self,
        *,
        load: Callable[[ModelKey], LoadedModel],
        budget_bytes: int,
    ) -> None:
        self._load = load
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self._in_use: dict[ModelKey, int] = {}
        self._lock = threading.RLock()
        self.evictions = 0

    def preload(self, keys: Iterable[ModelKey]) -> list[LoadedModel]:
        return [self._get(key) for key in keys]

    @contextmanager
    def use(self, key: ModelKey) -> Iterator[LoadedModel]:
        """The loaded model for `key`, protected from eviction while the block runs."""
        with self._lock:
            model = self._get(key)
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            yield model
        finally:
            with self._lock:
                self._in_use[key] -= 1
                if not self._in_use[key]:
                    del self._in_use[key]

    def loaded(self) -> list[ModelKey]:
        with self._lock:
            return list(self._models)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(model.size_bytes for model in self._models.values())

    def _get(self, key: ModelKey) -> LoadedModel:
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._load(key)
                self._models[key] = model
                self._evict_for(key)
            self._models.move_to_end(key)
            return model

    def _evict_for(self, keep: ModelKey) -> None:
        # Oldest first; a model serving a request, or the one just loaded, is never evicted.
        for key in list(self._models):
            if self.used_bytes() <= self.budget_bytes:
                return
            if key == keep or key in self._in_use:
                continue
            del self._models[key]
            self.evictions += 1
