"""The deployed stages' names, shared by the CDK app (infra_cdk/stage.py) and the CLI
(`stratoserve keys --target aws --stage`): one rule for what each stage's resources are
called."""

from __future__ import annotations

STAGES = ("dev", "prod")
DEFAULT_STAGE = "prod"


def deployed_prefix(project: str, stage: str) -> str:
    """Resource names' prefix: the project's own for prod, suffixed for the others, so both
    stages fit in one account ("stratoserve", "stratoserve-dev")."""
    return project if stage == DEFAULT_STAGE else f"{project}-{stage}"
