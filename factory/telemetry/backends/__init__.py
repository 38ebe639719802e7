"""Telemetry sources: one module per source behind one interface (`GpuBackend`).

Each has an `is_available()` probe; `host` reads the node's CPU, memory and RAPL energy.
"""
