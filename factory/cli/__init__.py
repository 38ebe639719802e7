"""The `factory` command line: a thin layer over `factory.control_plane` and the SDK."""
