"""The runner against moto S3 and real Wasmtime."""
