"""The CLI's stdout carries the command's output only: Ray's background notices go to stderr."""

from __future__ import annotations

import io
import json
import threading

from factory.cli.streams import RayNoticesToStderr


def test_a_ray_thread_s_notice_goes_to_stderr_and_the_json_stays_whole() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdout = RayNoticesToStderr(out, err)
    stdout.write('{"job_id": ')
    notice = threading.Thread(target=stdout.write, args=("(raylet) WARNING: 8 PYTHON workers\n",),
                              name="ray_listen_error_messages")
    notice.start()
    notice.join()
    stdout.write('"fit-1"}\n')
    stdout.flush()
    assert json.loads(out.getvalue()) == {"job_id": "fit-1"}
    assert err.getvalue() == "(raylet) WARNING: 8 PYTHON workers\n"
    assert stdout.getvalue() == out.getvalue()  # anything else is the real stdout's
