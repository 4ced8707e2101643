"""The CDK app: the declaration, the stage from the CDK context, the layers (built here
when missing or stale, as CDK's bundling would), one ServiceStack, and cdk-nag's
AwsSolutions checks on every synth.

    npx cdk synth                      # the prod stage (-c stage=prod)
    npx cdk deploy -c stage=dev        # the dev stage
    python -m infra_cdk                # the same synth without the CDK CLI
"""

from __future__ import annotations

import os
from pathlib import Path

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra_cdk.nag import acknowledge_findings
from infra_cdk.stacks.service_stack import ServiceStack
from infra_cdk.stage import DEFAULT_STAGE, stage_named
from layers.builder import LayerError, build_layers
from stratoserve.declaration import default_path, load_declaration

RECOGNIZE_LAYER_VERSION = "@aws-cdk/aws-lambda:recognizeLayerVersion"


class SynthError(Exception):
    """What stops a synth, in lines a user can act on."""


def build_app(app: App | None = None) -> tuple[App, ServiceStack]:
    """The app and its stack. Context: `stage` (dev or prod), `config` (the declaration
    file, default ./stratoserve.toml), `nag` ("false" leaves the checks out)."""
    # The CDK CLI says where to write ($CDK_OUTDIR); on its own the app writes cdk.out/.
    app = app or App(outdir=os.environ.get("CDK_OUTDIR") or "cdk.out")
    # A new layer (a new pin, a rebuilt model) must publish a new function version, or the
    # `live` alias and CodeDeploy never see it. Set here, not only in cdk.json, so that
    # `python -m infra_cdk` and the tests build the same template as the CDK CLI.
    app.node.set_context(RECOGNIZE_LAYER_VERSION, True)
    stage = stage_named(str(app.node.try_get_context("stage") or DEFAULT_STAGE))
    config = app.node.try_get_context("config")
    source = (Path(config) if config else default_path()).resolve()
    declaration = load_declaration(source)
    try:
        build = build_layers(declaration, source)
    except LayerError as error:
        raise SynthError(str(error)) from None
    if build.problems:
        raise SynthError("\n".join(build.problems))
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    stack = ServiceStack(
        app,
        stage.prefix(declaration.project.name),
        declaration=declaration,
        build=build,
        stage=stage,
        description=f"stratoserve {declaration.project.name} ({stage.name})",
        env=Environment(account=account, region=region) if account and region else None,
    )
    if str(app.node.try_get_context("nag")).lower() != "false":
        # The acknowledged findings and their reasons land in each resource's metadata
        # (cdk_nag.rules_to_suppress), as audit tools that read cdk-nag's reports expect.
        Validations.of(app).add_plugins(
            AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True)
        )
        acknowledge_findings(stack)
    return app, stack
