"""The upload pipeline (initiate → finalize → abort) and its S3 event parsing."""

__all__: list[str] = []
