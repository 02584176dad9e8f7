"""The gateway: from ``/api/ext/{extension}/{path}`` to the runner and back."""

__all__ = ["runner_client", "service"]
