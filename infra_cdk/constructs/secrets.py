"""The secrets the functions read at run time, never at deploy time: the key tenants'
callback signatures derive from (generated here), and the Modal token of the GPU layer
(put there by the operator: see docs/DEPLOY.md)."""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct


class CallbackSigningSecret(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, name: str, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        # Named by CloudFormation: a stack deployed again after a delete never meets a kept
        # secret of the same name.
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description=f"{name}: the key job callbacks' signatures derive from",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
            # Tenants verify callbacks with secrets derived from it: prod keeps it.
            removal_policy=removal_policy,
        )


class ModalTokenSecret(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, name: str, app: str) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description=(
                f"{name}: the Modal token the worker spawns {app}'s calls with. Put "
                '{"token_id": "ak-...", "token_secret": "as-..."} here; until then GPU jobs '
                "fall back to the CPU worker or fail, as routing.<model>.gpu_fallback says"
            ),
            # No token in the template: an empty token_id (the runtime refuses it with that
            # reason) and a random token_secret, replaced by the operator's real token.
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"token_id": ""}),
                generate_string_key="token_secret",
                exclude_punctuation=True,
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
