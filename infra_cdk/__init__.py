"""The AWS CDK app (not built yet: see infra_cdk/README.md)."""
