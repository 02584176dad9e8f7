"""The runner: executes verified extension bundles in Wasmtime and serves their UI assets."""
