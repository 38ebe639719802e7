"""The model registry: versioned, checksummed artifacts with aliases and lineage."""
