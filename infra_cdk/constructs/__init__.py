"""One construct per concern; the stack (infra_cdk/stacks/) wires them together."""

import re


def pascal_case(name: str) -> str:
    """A declared name as a construct id: "embed" -> "Embed", "models-digits" ->
    "ModelsDigits", "my_model" -> "MyModel"."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", name) if part)
