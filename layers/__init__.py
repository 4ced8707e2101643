"""Lambda layers: which function carries which layer (recipes.py), and the builder that
makes them without Docker (pip for the target platform, stripped, compiled for the target
Python, zipped deterministically) with the checks of Lambda's size limits."""

from layers.builder import BuildReport, LayerBuild, LayerError, build_layers
from layers.recipes import function_layers, layer_recipes

__all__ = [
    "BuildReport",
    "LayerBuild",
    "LayerError",
    "build_layers",
    "function_layers",
    "layer_recipes",
]
