"""The stacks: they wire the constructs of infra_cdk/constructs/ together and grant."""
