"""The AWS deployment: templates (``*.yaml``), offline packaging and checks, and ``make deploy``."""
