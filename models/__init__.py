"""Model recipes: each builds ONNX artifacts from source weights."""
