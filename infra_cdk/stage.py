"""The deployment stages (`cdk deploy -c stage=dev|prod`): one stack class, built with
different arguments. Nothing else may differ between dev and prod."""

from __future__ import annotations

from dataclasses import dataclass

from stratoserve.declaration.stages import DEFAULT_STAGE, STAGES, deployed_prefix

__all__ = ["DEFAULT_STAGE", "STAGES", "Stage", "StageError", "stage_named"]


class StageError(ValueError):
    """An unknown stage in the CDK context."""


@dataclass(frozen=True)
class Stage:
    name: str
    retain_data: bool
    """prod keeps the job table, the results bucket and the logs when the stack is deleted
    (and protects the table from deletion); dev deletes them with the stack."""
    gradual_deployment: bool
    """prod rolls a new version out as [deploy].deployment says; dev all at once."""
    log_retention_days: int | None
    """None: the declaration's [deploy].log_retention_days."""
    provisioned_concurrency: bool
    """dev keeps no environments provisioned (they are billed while they exist)."""

    def prefix(self, project: str) -> str:
        """Resource names: the project's own for prod, suffixed for the others, so both
        stages fit in one account (`stratoserve keys --target aws --stage dev` uses it)."""
        return deployed_prefix(project, self.name)


def stage_named(name: str) -> Stage:
    if name == "prod":
        return Stage(
            "prod",
            retain_data=True,
            gradual_deployment=True,
            log_retention_days=None,
            provisioned_concurrency=True,
        )
    if name == "dev":
        return Stage(
            "dev",
            retain_data=False,
            gradual_deployment=False,
            log_retention_days=7,
            provisioned_concurrency=False,
        )
    raise StageError(f"unknown stage {name!r}: -c stage= takes {' or '.join(STAGES)}")
