"""Lambda's size limits: one clear line per function over them; big zips only a note."""

from __future__ import annotations

from layers.limits import MIB, FunctionSize, function_problems, layer_note


def test_a_function_within_the_limit_passes() -> None:
    size = FunctionSize("digits", "arm64", 1 * MIB, (("runtime", 20 * MIB), ("onnx", 60 * MIB)))
    assert function_problems(size) == []


def test_over_the_unzipped_limit_names_each_part() -> None:
    size = FunctionSize(
        "embed",
        "arm64",
        MIB // 2,
        (("runtime", 31 * MIB), ("onnx", 58 * MIB), ("models-embed", 173 * MIB)),
    )
    assert function_problems(size) == [
        "functions.embed: 262.5 MB unzipped with its layers (code 0.5 MB, runtime 31 MB, "
        "onnx 58 MB, models-embed 173 MB): over Lambda's 250 MB; ship it as a container "
        'image (package = "image") or trim its models'
    ]


def test_over_without_models_and_too_many_layers() -> None:
    layers = tuple((f"layer{index}", 50 * MIB) for index in range(6))
    problems = function_problems(FunctionSize("api", "x86_64", 0, layers))
    assert problems == [
        "functions.api: 300.0 MB unzipped with its layers (code 0.0 MB, layer0 50 MB, "
        "layer1 50 MB, layer2 50 MB, layer3 50 MB, layer4 50 MB, layer5 50 MB): "
        "over Lambda's 250 MB; "
        'trim its layers or ship it as a container image (package = "image")',
        "functions.api: 6 layers: over Lambda's 5",
    ]


def test_an_image_function_carries_what_a_zip_function_could_not() -> None:
    layers = (("runtime", 20 * MIB), ("onnx", 108 * MIB), ("models-worker", 140 * MIB))
    assert function_problems(FunctionSize("worker", "arm64", MIB, layers)) != []
    assert function_problems(FunctionSize("worker", "arm64", MIB, layers, "image")) == []
    huge = (("models-worker", 11 << 30),)
    assert function_problems(FunctionSize("worker", "arm64", 0, huge, "image")) == [
        "functions.worker: 11264 MB of code and layers: over a container image's 10 GB"
    ]


def test_a_big_zip_is_a_note() -> None:
    assert layer_note("onnx", "aarch64", 50 * MIB) is None
    note = layer_note("models-embed", "any", 80 * MIB)
    assert note is not None and "80.0 MB zipped" in note and "through S3" in note
