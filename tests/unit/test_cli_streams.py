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


def test_the_raylets_worker_count_warning_is_dropped_and_other_notices_kept_whole() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdout = RayNoticesToStderr(out, err)
    warning = ("(raylet) WARNING: 8 PYTHON worker processes have been started on node: ab12 with address: "
               "10.0.0.1, which is 4x the maximum expected startup concurrency (2).")

    def notices() -> None:  # as Ray's `print_worker_logs` prints: the line, then its newline
        print(warning, file=stdout)
        print("(raylet) A worker died or was killed while executing a task", file=stdout)

    stdout.write("factory up\n")
    thread = threading.Thread(target=notices, name="ray_listen_error_messages")
    thread.start()
    thread.join()
    print(f"{warning} [repeated 8x across cluster]", file=stdout)  # Ray's flush as the driver shuts down
    print("{}", file=stdout)
    assert out.getvalue() == "factory up\n{}\n"
    assert err.getvalue() == "(raylet) A worker died or was killed while executing a task\n"
