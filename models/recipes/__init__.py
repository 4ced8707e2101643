"""Registry of model recipes, imported lazily so listing them costs no heavy imports."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from models.recipes.base import Recipe

RECIPES: dict[str, str] = {
    "digits": "models.recipes.digits",
    "minilm": "models.recipes.minilm",
}


class UnknownRecipeError(ValueError):
    """The declaration names a recipe this registry does not know."""


def load_recipe(name: str) -> Recipe:
    """Import the recipe module registered under ``name``."""
    module_path = _module_path(name)
    module = importlib.import_module(module_path)
    if not callable(getattr(module, "build", None)):
        raise UnknownRecipeError(f"recipe module {module_path} defines no build() function")
    packages = getattr(module, "SOURCE_PACKAGES", None)
    if not isinstance(packages, tuple) or not all(isinstance(p, str) for p in packages):
        raise UnknownRecipeError(
            f"recipe module {module_path} defines no SOURCE_PACKAGES tuple of package names"
        )
    # A module with a matching module-level build() satisfies the Recipe protocol.
    return cast("Recipe", module)


def recipe_sources(name: str) -> list[Path]:
    """The source files that shape what recipe ``name`` builds: its module, the helper
    modules named after it (``minilm_parity.py`` for ``minilm``) and the shared base."""
    module = Path(str(importlib.import_module(_module_path(name)).__file__))
    helpers = sorted(module.parent.glob(f"{module.stem}_*.py"))
    return [module, *helpers, Path(__file__).with_name("base.py")]


def _module_path(name: str) -> str:
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise UnknownRecipeError(f"unknown recipe {name!r}; known recipes: {known}") from None
