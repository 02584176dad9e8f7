"""Bundle format: manifest, reproducible pack, streaming verification, signatures."""
