"""The Python client of a stratoserve API (deployed, or `stratoserve dev`): typed results,
typed errors that carry the API's message, jobs that wait with backoff. httpx is its one
dependency (`pip install 'stratoserve[client]'`)."""

from stratoserve.client.async_client import AsyncClient, AsyncJob
from stratoserve.client.client import Client, Job
from stratoserve.client.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    ServerError,
    StratoserveError,
    ThrottledError,
    UnprocessableError,
)
from stratoserve.client.results import JobState, ModelRef, Prediction

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobState",
    "JobTimeoutError",
    "ModelRef",
    "NotFoundError",
    "PayloadTooLargeError",
    "Prediction",
    "QuotaExceededError",
    "ServerError",
    "StratoserveError",
    "ThrottledError",
    "UnprocessableError",
]
