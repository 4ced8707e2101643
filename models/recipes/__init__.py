"""Registry of model recipes, imported lazily so listing them costs no heavy imports."""

from __future__ import annotations

import importlib
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
    try:
        module_path = RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise UnknownRecipeError(f"unknown recipe {name!r}; known recipes: {known}") from None
    module = importlib.import_module(module_path)
    if not callable(getattr(module, "build", None)):
        raise UnknownRecipeError(f"recipe module {module_path} defines no build() function")
    # A module with a matching module-level build() satisfies the Recipe protocol.
    return cast("Recipe", module)
