"""The AWS CDK app that `cdk deploy` ships: infra_cdk/app.py builds it from stratoserve.toml."""
