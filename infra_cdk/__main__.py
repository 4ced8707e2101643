"""`cdk synth` runs this (cdk.json: "python -m infra_cdk"); it also synthesizes on its
own, into cdk.out/."""

import sys

from infra_cdk.app import SynthError, build_app
from infra_cdk.stage import StageError
from stratoserve.declaration import DeclarationError


def main() -> int:
    try:
        app, _ = build_app()
    except (DeclarationError, SynthError, StageError) as error:
        sys.stderr.write(f"stratoserve: cannot synthesize: {error}\n")
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
