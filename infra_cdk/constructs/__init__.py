"""One construct per concern; the stack (infra_cdk/stacks/) wires them together."""
