"""The smallest valid stratoserve.toml, for tests that add to it."""

MINIMAL = """
[models.digits]
task = "classify"
[models.digits.versions.1]
artifact = "digits/1/model.onnx"
[api.v1]
models = { digits = "1" }
"""
