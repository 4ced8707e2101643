"""Lambda's size limits, checked per function against its code and its layers."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
UNZIPPED_LIMIT = 250 * MIB
"""A function's code plus all its layers, unzipped (AWS: 262,144,000 bytes)."""
DIRECT_UPLOAD_LIMIT = 50 * MIB
"""A zip uploaded in the API call; through S3 (how CDK ships assets) a layer may be larger."""
MAX_LAYERS = 5
IMAGE_LIMIT = 10 * (1 << 30)
"""A container image function's image, uncompressed (10 GB)."""


@dataclass(frozen=True)
class FunctionSize:
    name: str
    architecture: str
    code_bytes: int
    layers: tuple[tuple[str, int], ...]
    """(layer, unzipped bytes), in attachment order."""
    package: str = "zip"
    """zip: Lambda's 250 MB and 5 layers apply; image: the layers are unpacked into a
    container image, which may hold 10 GB."""

    @property
    def unzipped_bytes(self) -> int:
        return self.code_bytes + sum(size for _, size in self.layers)


def megabytes(size: int) -> str:
    return f"{size / MIB:.1f}" if size < 10 * MIB else f"{size / MIB:.0f}"


def function_problems(size: FunctionSize) -> list[str]:
    """One line per limit the function breaks, naming the parts and what to do."""
    problems = []
    total = size.unzipped_bytes
    if size.package == "image":
        if total > IMAGE_LIMIT:
            problems.append(
                f"functions.{size.name}: {total / MIB:.0f} MB of code and layers: over a "
                f"container image's {IMAGE_LIMIT >> 30} GB"
            )
        return problems
    if total > UNZIPPED_LIMIT:
        parts = ", ".join(
            [f"code {megabytes(size.code_bytes)} MB"]
            + [f"{layer} {megabytes(layer_bytes)} MB" for layer, layer_bytes in size.layers]
        )
        largest = max(size.layers, key=lambda layer: layer[1], default=("", 0))[0]
        advice = (
            'ship it as a container image (package = "image") or trim its models'
            if largest.startswith("models-")
            else 'trim its layers or ship it as a container image (package = "image")'
        )
        problems.append(
            f"functions.{size.name}: {total / MIB:.1f} MB unzipped with its layers ({parts}): "
            f"over Lambda's {UNZIPPED_LIMIT // MIB} MB; {advice}"
        )
    if len(size.layers) > MAX_LAYERS:
        problems.append(
            f"functions.{size.name}: {len(size.layers)} layers: over Lambda's {MAX_LAYERS}"
        )
    return problems


def layer_note(name: str, arch: str, zipped_bytes: int) -> str | None:
    """A layer zip past the direct-upload limit is fine through S3: worth a note only."""
    if zipped_bytes <= DIRECT_UPLOAD_LIMIT:
        return None
    return (
        f"layer {name} ({arch}) is {zipped_bytes / MIB:.1f} MB zipped: over the "
        f"{DIRECT_UPLOAD_LIMIT // MIB} MB of a direct upload, so it must go through S3 "
        "(CDK assets do)"
    )
