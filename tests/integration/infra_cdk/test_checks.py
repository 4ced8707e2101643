"""The template passes AWS's own checks: cdk-nag's AwsSolutions pack (every finding fixed or
acknowledged with a reason in infra_cdk/nag.py; the synths above would have failed on any
other), cfn-lint, and SAM's validator where aws-sam-cli is installed in its own venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from infra_cdk.nag import REASONS
from tests.conftest import ROOT
from tests.integration.infra_cdk.conftest import offline_environment

if TYPE_CHECKING:
    from tests.integration.infra_cdk.conftest import Synth

SAM = ROOT / "build" / "sam-venv" / "bin" / "sam"


def test_nag_ran_and_every_acknowledgement_is_recorded_with_its_reason(prod: Synth) -> None:
    """cdk-nag writes what it acknowledged into each resource's metadata (the audit trail
    compliance tools read): the API's methods carry the API-key design's reasons."""
    recorded = {
        rule["id"]: rule["reason"]
        for resource in prod.template_json["Resources"].values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    }
    for finding in ("AwsSolutions-APIG4", "AwsSolutions-COG4", "AwsSolutions-L1"):
        assert recorded.get(finding) == REASONS[finding], finding
    for finding, reason in REASONS.items():
        assert finding.startswith("AwsSolutions-")
        assert len(reason) > 40, finding


def test_nag_fails_a_synth_with_an_unacknowledged_finding(tmp_path: Path) -> None:
    """The check can fail: a bare bucket (no TLS policy, no access logs) stops the synth."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bare")
    s3.Bucket(stack, "Bucket")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="AwsSolutions-S10"):
        app.synth()


def test_cfn_lint_is_clean(prod: Synth, dev: Synth) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run(
        [str(cfn_lint), "--ignore-checks=W3005", str(prod.template_file), str(dev.template_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_sam_validates_the_template(prod: Synth, tmp_path: Path) -> None:
    if not SAM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SAM} is missing: `make install` puts aws-sam-cli in its own venv")
        pytest.skip(f"aws-sam-cli is not installed ({SAM}); `make install` installs it")
    environment = offline_environment(tmp_path)
    environment["AWS_DEFAULT_REGION"] = "us-east-1"
    environment["SAM_CLI_TELEMETRY"] = "0"
    done = subprocess.run(
        [str(SAM), "validate", "--lint", "-t", str(prod.template_file)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
