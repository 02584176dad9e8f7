"""Domain code shared by the API, the runner and the CLI; its subpackages are its public surface."""

__all__: list[str] = []
