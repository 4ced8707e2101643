"""`cdk synth` runs this. The stacks are not built yet; say so instead of synthesizing
an empty app that would deploy nothing."""

import sys

sys.exit(
    "stratoserve: the CDK app (infra_cdk/) is not built yet, so there is nothing to synthesize "
    "or deploy. Use `stratoserve dev` to run the API locally; see README.md (Roadmap)."
)
