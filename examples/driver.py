"""An example driver: talk to a running factory from a Ray job.

    factory up
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python examples/driver.py

It prints the factory's status as JSON on its last line, and records an audit event saying that a
driver looked, so a person can see in `factory audit` that the job reached the factory.
"""

from __future__ import annotations

import json
import os

import factory


def main() -> None:
    """Connect, show the factory's status, leave a trace in the audit log."""
    client = factory.connect()
    status = client.status()
    job_id = os.environ.get("RAY_JOB_ID", "local")
    client.record_audit(f"driver:{job_id}", "driver.connected", "examples/driver.py")
    print(f"factory {status.version} at factory time {status.clock.now:%Y-%m-%d %H:%M:%S} UTC, "
          f"{len(status.actors)} actors, healthy={status.healthy}")
    print(json.dumps(status.model_dump(mode="json")))


if __name__ == "__main__":
    main()
