"""The `factory` command line: a thin layer over `factory.lifecycle` and the SDK."""
