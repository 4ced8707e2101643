"""The one factory of AWS clients: each is built on first use, once per execution
environment, and handed to the code that needs it (which also accepts a client of its own,
as Powertools' persistence layers do).

boto3 is imported here, on first use, never at init: the inline predict path of a model
function does not pay for it. The endpoint comes from boto3's own configuration
(`AWS_ENDPOINT_URL`, which the local stack sets to its moto server).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# Fail fast inside a Lambda invocation: a few seconds per try, botocore's standard retries.
_TIMEOUTS = {"connect_timeout": 2, "read_timeout": 10}
_RETRIES = {"mode": "standard", "max_attempts": 3}
# A warm-up target may cold-start (Lambda gives init 10 s) before it answers. One attempt
# only: a retry would land in an environment a sibling target just freed, proving nothing.
# A connection each for the fan-out's calls, which all run at once (49 at most).
_INVOKE_TIMEOUTS = {"connect_timeout": 2, "read_timeout": 15}
_INVOKE_RETRIES = {"mode": "standard", "total_max_attempts": 1}
_INVOKE_CONNECTIONS = 50


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError ("ConditionalCheckFailedException"),
    None for anything else."""
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    return str(code) if code is not None else None


def describe_error(error: BaseException) -> str:
    """One line for a log or a job's reason."""
    code = error_code(error)
    return f"{code}: {error}" if code else f"{type(error).__name__}: {error}"


def is_aws_failure(error: BaseException) -> bool:
    """AWS refused a call (a ClientError) or could not be reached (botocore's own errors)."""
    return error_code(error) is not None or type(error).__module__.startswith("botocore")


def public_reason(error: BaseException) -> str:
    """What a tenant may read about a failure: AWS's error code, never its message (which
    names roles, accounts and ARNs); other errors as they are (they are the runtime's own)."""
    code = error_code(error)
    if code is not None:
        return f"AWS error {code}"
    if type(error).__module__.startswith(("botocore", "urllib3")):
        return f"AWS unreachable ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"


class AwsClients:
    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                options: dict[str, Any] = {}
                if service == "s3":
                    # Path-style URLs work against every endpoint, moto's 127.0.0.1 included,
                    # and are what presigned result URLs point at; SigV4 is what every
                    # region accepts.
                    options["s3"] = {"addressing_style": "path"}
                    options["signature_version"] = "s3v4"
                config = Config(**_TIMEOUTS, retries=_RETRIES, **options)
                self._clients[service] = boto3.client(service, config=config)
            return self._clients[service]

    @property
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self.client("dynamodb")
        return client

    @property
    def sqs(self) -> SQSClient:
        client: SQSClient = self.client("sqs")
        return client

    @property
    def s3(self) -> S3Client:
        client: S3Client = self.client("s3")
        return client

    def lambda_client(self, endpoint_url: str | None = None) -> LambdaClient:
        """Lambda's client, for a function invoking its own alias (a warm-up's fan-out).
        `endpoint_url` overrides boto3's (the local stack's Invoke API: `AWS_ENDPOINT_URL`
        points at moto, which runs no local function); the first call's endpoint stays."""
        with self._lock:
            if "lambda" not in self._clients:
                import boto3
                from botocore.config import Config

                config = Config(
                    **_INVOKE_TIMEOUTS,
                    retries=_INVOKE_RETRIES,
                    max_pool_connections=_INVOKE_CONNECTIONS,
                )
                self._clients["lambda"] = boto3.client(
                    "lambda", config=config, endpoint_url=endpoint_url
                )
            client: LambdaClient = self._clients["lambda"]
            return client
