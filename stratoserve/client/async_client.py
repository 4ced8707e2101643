"""The asyncio client: the same calls as `Client`, awaited.

async with AsyncClient(url, api_key=key) as client:
    prediction = await client.predict("digits", [[0.0] * 64])
    outputs = (await (await client.submit("embed", texts)).wait()).outputs
"""

from __future__ import annotations

import asyncio
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


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_version: str = "v2",
        timeout_s: float = 30.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_version = api_version
        self.retries = Retries(attempts=max_retries + 1)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"x-api-key": api_key},
            timeout=timeout_s,
            transport=transport,
        )

    async def predict(
        self, model: str, inputs: list[Any], *, version: str | None = None
    ) -> Prediction:
        version = version or self.api_version
        # A request over the inline limit becomes a job: the key keeps a retry to one.
        answer = await self._send(
            "POST",
            f"{version}/predict/{model}",
            json={"inputs": inputs},
            headers={"idempotency-key": str(uuid.uuid4())},
        )
        body = decode(answer.status_code, parse_json(answer.content), ok=(200, 202))
        if answer.status_code == 202:
            return await AsyncJob(self, job_state(body), version).wait()
        return prediction(body, answer.headers.get("x-request-id"))

    async def submit(
        self,
        model: str,
        inputs: list[Any],
        *,
        version: str | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncJob:
        version = version or self.api_version
        request, headers = submission(
            model, inputs, callback_url, idempotency_key or str(uuid.uuid4())
        )
        answer = await self._send("POST", f"{version}/jobs", json=request, headers=headers)
        body = decode(answer.status_code, parse_json(answer.content), ok=(202,))
        return AsyncJob(self, job_state(body), version, answer.headers.get("x-request-id"))

    async def job(self, job_id: str, *, version: str | None = None) -> AsyncJob:
        job = AsyncJob(self, JobState(job_id=job_id, status="queued"), version or self.api_version)
        await job.refresh()
        return job

    async def models(self, *, version: str | None = None) -> list[dict[str, Any]]:
        body = await self._get(f"{version or self.api_version}/models")
        models: list[dict[str, Any]] = body["models"] if isinstance(body, dict) else body
        return models

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._get("health")
        return body

    async def _get(self, path: str) -> Any:
        answer = await self._send("GET", path)
        return decode(answer.status_code, parse_json(answer.content))

    async def _delete(self, path: str) -> Any:
        answer = await self._send("DELETE", path)
        return decode(answer.status_code, parse_json(answer.content))

    async def _send(self, method: str, path: str, **arguments: Any) -> httpx.Response:
        attempt = 0
        while True:
            answer: httpx.Response | None = None
            try:
                answer = await self._http.request(method, path, **arguments)
            except httpx.TransportError:
                if self.retries.next_delay(attempt, None) is None:
                    raise
            wait_s = self.retries.next_delay(attempt, answer)
            if wait_s is None:
                assert answer is not None
                return answer
            await asyncio.sleep(wait_s)
            attempt += 1

    async def _fetch(self, url: str) -> Any:
        async with httpx.AsyncClient(timeout=self._http.timeout) as bucket:
            answer = await bucket.get(url)
        return decode(answer.status_code, parse_json(answer.content))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncJob:
    def __init__(
        self, client: AsyncClient, state: JobState, version: str, request_id: str | None = None
    ) -> None:
        self._client = client
        self.state = state
        self.version = version
        self.request_id = request_id

    @property
    def job_id(self) -> str:
        return self.state.job_id

    @property
    def status(self) -> str:
        return self.state.status

    async def refresh(self) -> JobState:
        self.state = job_state(await self._client._get(f"{self.version}/jobs/{self.job_id}"))
        return self.state

    async def cancel(self) -> JobState:
        self.state = job_state(await self._client._delete(f"{self.version}/jobs/{self.job_id}"))
        return self.state

    async def wait(
        self, *, timeout_s: float = 900.0, poll_s: float = 0.25, most_s: float = 5.0
    ) -> Prediction:
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while not (await self.refresh()).finished:
            if time.monotonic() > deadline:
                raise JobTimeoutError(
                    f"job {self.job_id} still {self.state.status} after {timeout_s} s"
                )
            await asyncio.sleep(backoff(attempt, poll_s, most_s))
            attempt += 1
        url = result_url(self.state)
        result = await self._client._fetch(url) if url else self.state.result
        return job_prediction(self.state, result, self.version)
