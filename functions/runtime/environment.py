"""One Lambda execution environment: the declaration, the function it runs as, and the
models it keeps loaded.

`get_environment()` is built once per environment, during init (the handler module calls
it at import), so models load outside any request and outside FastAPI's lifespan, which
Mangum may run per invocation.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from functions.runtime.models import LoadedModel, ModelKey, load_model
from functions.runtime.observability import logger, record_model_load
from functions.runtime.session_cache import SessionCache
from functions.runtime.tenants import Tenant, TenantDirectory
from stratoserve.declaration import API_FUNCTION, load_declaration, models_dir

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration, FunctionSpec, PlanSpec


class Settings(BaseSettings):
    """What the environment is told by its variables (set by CDK on AWS, by the local stack
    on this machine)."""

    model_config = SettingsConfigDict(env_prefix="STRATOSERVE_", populate_by_name=True)

    function: str = API_FUNCTION
    config: Path = Path("stratoserve.toml")
    memory_mb: int | None = Field(default=None, alias="AWS_LAMBDA_FUNCTION_MEMORY_SIZE")


@lru_cache
def get_settings() -> Settings:
    return Settings()


class UnknownModelError(LookupError):
    """The API version does not exist, or does not serve that model (404)."""


class ExecutionEnvironment:
    def __init__(
        self,
        declaration: Declaration,
        source: Path,
        function: str,
        *,
        memory_mb: int | None = None,
    ) -> None:
        if function not in declaration.functions:
            known = ", ".join(sorted(declaration.functions))
            raise ValueError(f"function {function!r} is not declared (declared: {known})")
        self.declaration = declaration
        self.function_name = function
        self.function: FunctionSpec = declaration.functions[function]
        self.models_dir = models_dir(declaration, source)
        self.initialised_at = time.time()
        self.cold_start = True
        # On Lambda the configured memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE) is the truth.
        self.memory_mb = memory_mb or self.function.memory_mb
        budget = int(self.memory_mb * declaration.runtime.model_memory_fraction) << 20
        self.cache = SessionCache(load=self._load, budget_bytes=budget)
        self.tenants = TenantDirectory()

    def served_keys(self) -> list[ModelKey]:
        """The versions of this function's models that some API version serves."""
        keys = {
            ModelKey(model, version)
            for spec in self.declaration.api.values()
            for model, version in spec.models.items()
            if model in self.function.models
        }
        return sorted(keys, key=str)

    def resolve(self, api_version: str, model: str) -> ModelKey:
        try:
            version = self.declaration.served_version(api_version, model)
        except LookupError as error:
            raise UnknownModelError(str(error)) from None
        if model not in self.function.models:
            raise UnknownModelError(f"model {model} is not served by function {self.function_name}")
        return ModelKey(model, version)

    def plan_of(self, tenant: Tenant | None) -> PlanSpec | None:
        """The declared plan of the caller; None means no plan limits what it may call."""
        if tenant is None or tenant.plan is None:
            return None
        return self.declaration.plans.get(tenant.plan)

    def _load(self, key: ModelKey) -> LoadedModel:
        loaded = load_model(
            key, self.declaration.models[key.name], self.models_dir, self.declaration.runtime
        )
        logger.info(
            "model loaded",
            extra={"model": key.name, "version": key.version, "load_ms": round(loaded.load_ms, 1)},
        )
        record_model_load(key.name, key.version, loaded.load_ms)
        return loaded


@lru_cache
def get_environment() -> ExecutionEnvironment:
    settings = get_settings()
    declaration = load_declaration(settings.config)
    environment = ExecutionEnvironment(
        declaration, settings.config, settings.function, memory_mb=settings.memory_mb
    )
    environment.cache.preload(environment.served_keys())
    return environment
