"""stratoserve: serverless AI inference APIs from one declaration.

Kept empty of imports on purpose: the Lambda runtime imports `stratoserve.declaration`
on every cold start and must not pay for the CLI or the local stack.
"""

__version__ = "0.1.0"
