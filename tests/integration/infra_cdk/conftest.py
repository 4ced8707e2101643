"""One synth per stage per session, both offline (no AWS credentials, no Docker), run side
by side: prod through the CDK CLI from npm (`cdk synth`, as a user runs it), dev through
`python -m infra_cdk` (cdk.json's app, with the context the CLI would pass). Assets are
left unstaged (`--no-staging`, as `sam local` uses it): the template is the same, and the
tests do not copy 300 MB of layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from tests.conftest import ROOT

CDK_CLI = ROOT / "build" / "node" / "node_modules" / ".bin" / "cdk"
SYNTH_TIMEOUT_S = 300


@dataclass(frozen=True)
class Synth:
    stage: str
    outdir: Path
    template_file: Path
    template_json: dict[str, Any]
    template: Template

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self.template.find_resources(kind)
        return found


def offline_environment(outdir: Path) -> dict[str, str]:
    """This environment without any AWS credentials or profile, and nothing to reach."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "CDK_", "MODAL_"))
    }
    environment.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            "CDK_DISABLE_VERSION_CHECK": "1",
            "CDK_OUTDIR": str(outdir),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return environment


def synth_with_cli(outdir: Path) -> subprocess.CompletedProcess[str]:
    if not CDK_CLI.exists():
        pytest.fail(f"{CDK_CLI} is missing: `make install` installs the CDK CLI from npm")
    command = [
        str(CDK_CLI), "synth", "--quiet", "--no-staging", "--no-notices",
        "--output", str(outdir), "-c", "stage=prod",
    ]  # fmt: skip
    return subprocess.run(
        command,
        cwd=ROOT,
        env=offline_environment(outdir),
        capture_output=True,
        text=True,
        timeout=SYNTH_TIMEOUT_S,
    )


def synth_with_python(outdir: Path, context: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    environment = offline_environment(outdir)
    environment["CDK_CONTEXT_JSON"] = json.dumps(context)
    return subprocess.run(
        [sys.executable, "-m", "infra_cdk"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SYNTH_TIMEOUT_S,
    )


def _load(stage: str, outdir: Path, done: subprocess.CompletedProcess[str]) -> Synth:
    assert done.returncode == 0, f"{stage} synth failed:\n{done.stdout}\n{done.stderr}"
    manifest = json.loads((outdir / "manifest.json").read_text())
    stacks = [
        artifact["properties"]["templateFile"]
        for artifact in manifest["artifacts"].values()
        if artifact["type"] == "aws:cloudformation:stack"
    ]
    assert len(stacks) == 1, stacks
    template_file = outdir / stacks[0]
    template_json = json.loads(template_file.read_text())
    return Synth(stage, outdir, template_file, template_json, Template.from_json(template_json))


@pytest.fixture(scope="session")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    prod = tmp_path_factory.mktemp("cdk-prod")
    dev = tmp_path_factory.mktemp("cdk-dev")
    with ThreadPoolExecutor(max_workers=2) as pool:
        cli = pool.submit(synth_with_cli, prod)
        python = pool.submit(
            synth_with_python, dev, {"stage": "dev", "aws:cdk:disable-asset-staging": True}
        )
        return {
            "prod": _load("prod", prod, cli.result()),
            "dev": _load("dev", dev, python.result()),
        }


@pytest.fixture(scope="session")
def prod(synths: dict[str, Synth]) -> Synth:
    return synths["prod"]


@pytest.fixture(scope="session")
def dev(synths: dict[str, Synth]) -> Synth:
    return synths["dev"]
