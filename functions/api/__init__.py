"""The HTTP API: a FastAPI app behind Mangum, one instance per function."""
