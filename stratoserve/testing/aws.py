"""The AWS side of a project on moto, in the test's own process: the local stack's moto
server (`stratoserve.local.aws.LocalAws`) on a free port, with the declaration's job
resources laid out as `stratoserve dev` and the CDK app lay them out, and boto3 clients
signed with its credentials.

moto keeps its state per process (across server instances), so a reset empties everything
that any test of the process made in it; `MotoAws.reset` then lays the job resources out
again, at the same names and URLs.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratoserve.jobs import create_job_resources
from stratoserve.local.aws import LocalAws, client, function_environment
from stratoserve.local.loopback import new_token

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources


@dataclass
class MotoAws:
    """moto on 127.0.0.1 with the declaration's jobs queue (and its dead-letter queue), job
    table, results bucket and tenant registry.

    def test_a_job_message_reaches_the_queue(stratoserve_aws):
        sqs = stratoserve_aws.client("sqs")
        sqs.send_message(QueueUrl=stratoserve_aws.resources.queue_url, MessageBody="{}")
    """

    server: LocalAws
    declaration: Declaration
    resources: JobResources

    @classmethod
    def start(cls, declaration: Declaration) -> MotoAws:
        server = LocalAws(token=new_token())
        server.start()
        try:
            resources = create_job_resources(
                declaration, lambda service: client(service, server.endpoint_url, server.token)
            )
        except BaseException:
            server.stop()
            raise
        return cls(server, declaration, resources)

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def client(self, service: str) -> Any:
        """A boto3 client of this moto ("sqs", "dynamodb", "s3", "apigateway"...), signed
        with its credentials (moto here answers nothing else)."""
        return client(service, self.endpoint_url, self.server.token)

    def environment(self) -> dict[str, str]:
        """What a function of the project is given to use this AWS with the default boto3
        client: endpoint, region and credentials, and the job resources' names
        (STRATOSERVE_JOBS_TABLE...). For `monkeypatch.setenv` in a handler's test."""
        return {
            **function_environment(self.endpoint_url, self.server.token),
            **self.resources.environment(),
        }

    def reset(self) -> None:
        """Empty every queue, table and bucket, then lay the job resources out again."""
        self._empty()
        self.resources = create_job_resources(self.declaration, self.client)

    def stop(self) -> None:
        """Empty moto (its state outlives the server, in this process) and stop serving."""
        if not self.server.up:  # a test took it down (LocalAws.restart): up again to empty it
            self.server.start(self.server.port)
        try:
            self._empty()
        finally:
            self.server.stop()

    def _empty(self) -> None:
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset",
            method="POST",
            headers={"Authorization": f"Bearer {self.server.token}"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
