"""The synchronous client.

from stratoserve.client import Client

with Client("http://127.0.0.1:8000", api_key="...") as client:
    client.predict("embed", ["A man is eating food."]).outputs
    job = client.submit("embed", texts)
    outputs = job.wait().outputs        # polls with backoff; a progress bar on a terminal
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from stratoserve.client.errors import JobTimeoutError
from stratoserve.client.results import (
    JobState,
    Prediction,
    backoff,
    decode,
    job_prediction,
    job_state,
    parse_json,
    prediction,
    result_url,
    submission,
)
from stratoserve.client.retries import Retries

if TYPE_CHECKING:
    from types import TracebackType


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_version: str = "v2",
        timeout_s: float = 30.0,
        max_retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`base_url`: the API's root (the stage URL on AWS, `stratoserve dev`'s URL
        locally); `api_version`: v1, v2... (each serves its own model versions);
        `max_retries`: tries after the first of a request that failed on the way or was
        answered 429 "Too Many Requests", 502, 503 or 504 (retries.py says why those)."""
        self.api_version = api_version
        self.retries = Retries(attempts=max_retries + 1)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"x-api-key": api_key},
            timeout=timeout_s,
            transport=transport,
        )

    def predict(self, model: str, inputs: list[Any], *, version: str | None = None) -> Prediction:
        """The model's outputs for `inputs`. A request too big for the inline path is
        answered with a job (202): it is waited for, and its outputs returned the same."""
        version = version or self.api_version
        # A request over the inline limit becomes a job: the key keeps a retry to one.
        answer = self._send(
            "POST",
            f"{version}/predict/{model}",
            json={"inputs": inputs},
            headers={"idempotency-key": str(uuid.uuid4())},
        )
        body = decode(answer.status_code, parse_json(answer.content), ok=(200, 202))
        if answer.status_code == 202:
            return Job(self, job_state(body), version).wait()
        return prediction(body, answer.headers.get("x-request-id"))

    def submit(
        self,
        model: str,
        inputs: list[Any],
        *,
        version: str | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """A job (202); `Job.wait()` for its outputs. Without an `idempotency_key` the
        client makes one up, so that its own retries never queue a job twice."""
        version = version or self.api_version
        request, headers = submission(
            model, inputs, callback_url, idempotency_key or str(uuid.uuid4())
        )
        answer = self._send("POST", f"{version}/jobs", json=request, headers=headers)
        body = decode(answer.status_code, parse_json(answer.content), ok=(202,))
        return Job(self, job_state(body), version, answer.headers.get("x-request-id"))

    def job(self, job_id: str, *, version: str | None = None) -> Job:
        """A job submitted before (by id)."""
        job = Job(self, JobState(job_id=job_id, status="queued"), version or self.api_version)
        job.refresh()
        return job

    def models(self, *, version: str | None = None) -> list[dict[str, Any]]:
        """What the key's plan may use in that API version, with model versions."""
        answer = self._send("GET", f"{version or self.api_version}/models")
        body = decode(answer.status_code, parse_json(answer.content))
        models: list[dict[str, Any]] = body["models"] if isinstance(body, dict) else body
        return models

    def health(self) -> dict[str, Any]:
        answer = self._send("GET", "health")
        body: dict[str, Any] = decode(answer.status_code, parse_json(answer.content))
        return body

    def _get(self, path: str) -> Any:
        answer = self._send("GET", path)
        return decode(answer.status_code, parse_json(answer.content))

    def _delete(self, path: str) -> Any:
        answer = self._send("DELETE", path)
        return decode(answer.status_code, parse_json(answer.content))

    def _send(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        """The request, tried again as `self.retries` says; the last answer (or the last
        connection error, raised)."""
        attempt = 0
        while True:
            answer: httpx.Response | None = None
            try:
                answer = self._http.request(method, path, **arguments)
            except httpx.TransportError:
                if self.retries.next_delay(attempt, None) is None:
                    raise
            wait_s = self.retries.next_delay(attempt, answer)
            if wait_s is None:
                assert answer is not None
                return answer
            time.sleep(wait_s)
            attempt += 1

    def _fetch(self, url: str) -> Any:
        """A result behind a presigned URL: no API key goes to the bucket."""
        answer = httpx.get(url, timeout=self._http.timeout)
        return decode(answer.status_code, parse_json(answer.content))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class Job:
    def __init__(
        self, client: Client, state: JobState, version: str, request_id: str | None = None
    ) -> None:
        self._client = client
        self.state = state
        self.version = version
        self.request_id = request_id
        """The submitting request's id: the job's correlation id in every log line."""

    @property
    def job_id(self) -> str:
        return self.state.job_id

    @property
    def status(self) -> str:
        return self.state.status

    def refresh(self) -> JobState:
        self.state = job_state(self._client._get(f"{self.version}/jobs/{self.job_id}"))
        return self.state

    def cancel(self) -> JobState:
        """Cancel the job while it is queued; ConflictError once it runs or has finished."""
        self.state = job_state(self._client._delete(f"{self.version}/jobs/{self.job_id}"))
        return self.state

    def wait(
        self,
        *,
        timeout_s: float = 900.0,
        poll_s: float = 0.25,
        most_s: float = 5.0,
        progress: bool | None = None,
    ) -> Prediction:
        """Poll until the job finishes (backoff from poll_s to most_s); its outputs, or
        JobFailedError with the job's reason (JobCancelledError for a cancelled job). A
        progress line on a terminal by default."""
        show = sys.stderr.isatty() if progress is None else progress
        deadline = time.monotonic() + timeout_s
        attempt = 0
        with _Progress(self.job_id, show) as bar:
            while not self.refresh().finished:
                bar.update(self.state.status)
                if time.monotonic() > deadline:
                    raise JobTimeoutError(
                        f"job {self.job_id} still {self.status} after {timeout_s} s"
                    )
                time.sleep(backoff(attempt, poll_s, most_s))
                attempt += 1
            bar.update(self.state.status)
        return self._outputs()

    def _outputs(self) -> Prediction:
        url = result_url(self.state)
        result = self._client._fetch(url) if url else self.state.result
        return job_prediction(self.state, result, self.version)


class _Progress:
    """A one-line spinner with the job's state (rich), only where asked."""

    def __init__(self, job_id: str, show: bool) -> None:
        self._job_id = job_id
        self._status: Any = None
        if show:
            from rich.console import Console

            self._status = Console(stderr=True).status(f"job {job_id}: submitted")

    def update(self, state: str) -> None:
        if self._status is not None:
            self._status.update(f"job {self._job_id}: {state}")

    def __enter__(self) -> _Progress:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._status is not None:
            self._status.stop()
