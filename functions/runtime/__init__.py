"""What every function shares: the execution environment, the model cache, observability."""
