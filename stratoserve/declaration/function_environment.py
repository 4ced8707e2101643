"""The environment contract between the CDK app, the local stack and the runtime: the
variables a function is given, deployed or local, each named here once. The runtime reads
most of them through its settings (functions/runtime/environment.py, prefix PREFIX: a
variable's name is the prefix and the setting's field, upper-cased); the loader reads
CONFIG and MODELS_DIR itself, and Powertools reads its own."""

from __future__ import annotations

PREFIX = "STRATOSERVE_"

CONFIG = "STRATOSERVE_CONFIG"
"""The declaration file (in the function's code: stratoserve.toml beside the handlers)."""
MODELS_DIR = "STRATOSERVE_MODELS_DIR"
"""Where the built models are (a layer's /opt/models on Lambda)."""
FUNCTION = "STRATOSERVE_FUNCTION"
"""Which declared function this is."""

JOBS_TABLE = "STRATOSERVE_JOBS_TABLE"
"""The job store's table, its results bucket and the jobs queue: every function."""
JOBS_BUCKET = "STRATOSERVE_JOBS_BUCKET"
JOBS_QUEUE_URL = "STRATOSERVE_JOBS_QUEUE_URL"
TENANTS_TABLE = "STRATOSERVE_TENANTS_TABLE"
"""The tenant registry: on AWS the HTTP functions only (the local stack gives it to all)."""
CALLBACKS_QUEUE_URL = "STRATOSERVE_CALLBACKS_QUEUE_URL"
"""The callbacks queue: on AWS the worker only (the local stack gives it to all)."""
CALLBACK_SECRET_ARN = "STRATOSERVE_CALLBACK_SECRET_ARN"
"""On AWS, the worker only: the signing key's secret in Secrets Manager."""
CALLBACK_SIGNING_KEY = "STRATOSERVE_CALLBACK_SIGNING_KEY"
"""In the local stack, the worker only: the signing key itself."""
MODAL_SECRET_ARN = "STRATOSERVE_MODAL_SECRET_ARN"
"""On AWS, the worker only: Modal's token in Secrets Manager."""

LOCAL_STACK = "STRATOSERVE_LOCAL_STACK"
"""Set ("1") in `stratoserve dev`'s environments: callbacks may go to localhost."""
GPU_EXECUTOR_URL = "STRATOSERVE_GPU_EXECUTOR_URL"
"""In the local stack, the worker only: the local GPU executor in place of Modal."""
GPU_EXECUTOR_TOKEN = "STRATOSERVE_GPU_EXECUTOR_TOKEN"
"""In the local stack, the worker only: the token the local GPU executor asks of callers."""
LAMBDA_ENDPOINT_URL = "STRATOSERVE_LAMBDA_ENDPOINT_URL"
"""In the local stack: the local Lambda Invoke API, for the warm-up fan-out."""

POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
"""Powertools' own: the service name in logs and metrics (the project's name)."""
POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
"""Powertools' own: the metrics namespace (set on AWS; unset, the runtime's default)."""

SETTINGS = (
    CONFIG,
    FUNCTION,
    JOBS_TABLE,
    JOBS_BUCKET,
    JOBS_QUEUE_URL,
    TENANTS_TABLE,
    CALLBACKS_QUEUE_URL,
    CALLBACK_SECRET_ARN,
    CALLBACK_SIGNING_KEY,
    MODAL_SECRET_ARN,
    LOCAL_STACK,
    GPU_EXECUTOR_URL,
    GPU_EXECUTOR_TOKEN,
    LAMBDA_ENDPOINT_URL,
)
"""The variables the runtime's settings read (a test holds each to a settings field)."""
