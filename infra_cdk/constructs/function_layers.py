"""The Lambda layers `stratoserve layers build` made (layers/), one LayerVersion per
built zip, shared by the functions that carry it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import AssetHashType, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra_cdk.constructs import pascal_case

if TYPE_CHECKING:
    from layers.builder import LayerBuild

ARCHITECTURES = {"aarch64": [lambda_.Architecture.ARM_64], "x86_64": [lambda_.Architecture.X86_64]}
"""A layer's build platform -> Lambda's architectures; models layers (data: "any") fit both."""


class FunctionLayers(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, builds: list[LayerBuild], project: str
    ) -> None:
        super().__init__(scope, construct_id)
        self._layers: dict[tuple[str, str], lambda_.LayerVersion] = {}
        for build in builds:
            construct_name = pascal_case(f"{build.name}-{build.arch}")
            self._layers[(build.name, build.arch)] = lambda_.LayerVersion(
                self,
                construct_name,
                layer_version_name=f"{project}-{build.name}-{build.arch}",
                description=_description(build),
                # The builder's sha256 of the zip: CDK need not read 100 MB to hash it again.
                code=lambda_.Code.from_asset(
                    build.zip, asset_hash=build.sha256, asset_hash_type=AssetHashType.CUSTOM
                ),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                compatible_architectures=ARCHITECTURES.get(
                    build.arch, [lambda_.Architecture.ARM_64, lambda_.Architecture.X86_64]
                ),
                # Old versions stay: a rollback to the previous function version needs them.
                removal_policy=RemovalPolicy.RETAIN,
            )

    def get(self, name: str, arch: str) -> lambda_.LayerVersion:
        layer = self._layers.get((name, arch)) or self._layers.get((name, "any"))
        if layer is None:
            raise KeyError(f"layer {name} ({arch}) was not built")
        return layer


def _description(build: LayerBuild) -> str:
    if build.packages:
        packages = ", ".join(f"{name}=={version}" for name, version in build.packages.items())
    else:
        packages = "model artifacts"
    # LayerVersion descriptions stop at 256 characters.
    return f"stratoserve {build.name}: {packages}"[:256]
