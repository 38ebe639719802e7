"""The raylet's worker-count warning, which Ray 2.60 prints to a driver, never reaches the CLI's output.

Pins what `factory.cli.streams` filters on: the notice's text and the threads Ray prints it from.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, clean_env

pytestmark = pytest.mark.integration

NOTICE = "worker processes have been started on node"
# A driver with the CLI's stdout that starts 20 actors without CPUs on a 1-CPU head: the raylet warns
# at 4x its startup concurrency (1), and Ray prints the warning on its thread and again at shutdown.
DRIVER = """
import sys, time, ray
from factory.cli.streams import route_ray_notices_to_stderr

route_ray_notices_to_stderr()
ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1], logging_level="ERROR",
         log_to_driver=False)

@ray.remote(num_cpus=0)
class Idle:
    def ping(self):
        return 1

actors = [Idle.remote() for _ in range(20)]
ray.get([actor.ping.remote() for actor in actors])
time.sleep(5)  # the warning travels raylet -> GCS -> this driver
print('{"done": true}')
ray.shutdown()
"""


def test_the_raylets_worker_count_warning_is_logged_but_not_printed() -> None:
    temp_dir = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # short: Ray's socket paths live there
    try:
        result = subprocess.run([sys.executable, "-c", DRIVER, str(temp_dir)], cwd=REPO_ROOT,
                                env=clean_env(), capture_output=True, text=True, timeout=300)
        raylet_log = (temp_dir / "session_latest" / "logs" / "raylet.out").read_text()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"done": true}\n'
    assert NOTICE not in result.stderr
    assert NOTICE in raylet_log  # the raylet did warn: a leak would show
