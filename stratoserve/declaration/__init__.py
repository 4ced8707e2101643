"""stratoserve.toml: its schema and its one loader."""

from stratoserve.declaration.loader import (
    DeclarationError,
    default_path,
    load_declaration,
    models_dir,
)
from stratoserve.declaration.schema import (
    API_FUNCTION,
    Declaration,
    FunctionSpec,
    ModelSpec,
    PlanSpec,
)

__all__ = [
    "API_FUNCTION",
    "Declaration",
    "DeclarationError",
    "FunctionSpec",
    "ModelSpec",
    "PlanSpec",
    "default_path",
    "load_declaration",
    "models_dir",
]
