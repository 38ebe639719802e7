"""`factory demo`, as the README's first command runs it, tells its story and ends cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import FACTORY_BIN, clean_env, make_runner, write_config

pytestmark = pytest.mark.integration


def test_demo_brings_the_factory_up_shows_it_and_ends_cleanly(
    no_ray_running: None, tmp_path: Path
) -> None:
    # GPUs unset, as in configs/factory.yaml: the demo declares simulated ones.
    config = write_config(tmp_path / "factory.yaml", state_dir=tmp_path / "state",
                          ray={"num_cpus": 2, "num_gpus": None})
    run = make_runner(config, cwd=tmp_path)
    # The README's Quick start runs it with defaults; on a loaded 2-core machine it takes 5-6 minutes.
    result = run("demo", "--watch-s", "2", timeout=DEMO_TIMEOUT_S)
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "worker processes have been started" not in out + result.stderr  # no raylet notices
    assert "factory up on a local Ray head it started" in out
    assert "(healthy)" in out and "Dashboard  http://" in out
    times = [line.split("factory time ")[1] for line in out.splitlines() if "factory time " in line]
    assert len(times) == 3 and times == sorted(times) and len(set(times)) == 3  # the clock runs
    assert "factory.up" in out  # the audit log chapter reads the durable store
    assert "GPUs       4 total: 0 busy, 4 idle" in out  # the facility view, simulated GPUs
    assert "GPUs       4 total: 2 busy, 2 idle" in out  # while the demo job holds two
    assert sum(line.rstrip().endswith("demo-train") for line in out.splitlines()) == 2
    finished = next(line for line in out.splitlines() if line.startswith("'demo-train' finished"))
    assert float(finished.split(": ")[1].split(" kWh")[0]) > 0  # its energy is known when it ends
    # The price chapter: the built-in tariff (no data needed), its chart, a replayed price changing.
    assert "Price now" in out and "USD/MWh" in out and "tariff 'Illustrative" in out
    assert "┤" in out and "intervals all known (a tariff)" in out
    readings = [line for line in out.splitlines() if line.startswith("  2024-07-01") and "USD/MWh" in line]
    assert len(readings) == 3
    job = next(line for line in out.splitlines() if line.startswith("A 3 h job drawing"))
    now_cost, best_cost = (float(part.split(" ")[0]) for part in
                           (job.split("costs ")[1], job.split("now, ")[1]))
    assert best_cost <= now_cost  # the cheapest known start is never dearer than now
    # The scheduling chapter: the same jobs through fifo and price-aware on this factory's prices.
    costs = {line.split()[0]: line.split() for line in out.splitlines()
             if line.startswith(("  fifo ", "  price-aware "))}
    assert set(costs) == {"fifo", "price-aware"}
    assert float(costs["price-aware"][1]) < float(costs["fifo"][1])  # the tariff's cheap hours are used
    assert costs["price-aware"][3] == costs["fifo"][3]  # the same kWh, only moved in time
    assert all(row[row.index("misses") + 1] == "0" for row in costs.values())
    assert all(row[row.index("broken") + 1] == "0)" for row in costs.values())  # every admitted job on time
    assert "price-aware saves" in out and "factory simulate --prices" in out
    # The live chapter: real Ray Train jobs wait for the cheap hour, one pauses through the spike and
    # resumes from its checkpoint, all finish on time, and the accounts show what waiting saved.
    live = out[out.index("== 6. Live training"):]
    lines = {(line.split()[4], line.split()[5]) for line in live.splitlines() if " USD/MWh  " in line}
    for name in ("nlp-large", "vision-small", "ops-urgent"):
        assert (name, "REGISTERED") in lines, live  # ran, then registered its model
    assert ("nlp-large", "WAITING") in lines and ("vision-small", "WAITING") in lines, live
    assert ("nlp-large", "PAUSING") in lines and ("ops-urgent", "WAITING") not in lines, live
    assert "nlp-large resumed from its checkpoint at step" in live, live
    # A job waiting for the cheap hour says why and what it is promised: its latest safe start, which
    # lies between its cheap window and its deadline, and it has started by then.
    narration = live[:live.index("The models the jobs registered")].splitlines()
    promises = [(i, match) for i, line in enumerate(narration) if (match := re.fullmatch(
        r"  (nlp-large|vision-small) waits: cheap window at (\d\d:\d\d); latest safe start (\d\d:\d\d); "
        r"deadline (\d\d:\d\d)", line))]
    assert {match[1] for _, match in promises} == {"nlp-large", "vision-small"}, live
    for i, match in promises:
        name, window, latest, deadline = match.groups()
        assert window <= latest < deadline
        started = next(line.split()[0] for line in narration[i:] if line.split()[4:6] == [name, "RUNNING"])
        assert minutes(started) <= minutes(latest) + 5  # narrated within a poll of its start
    rows = {line.split()[0]: line.split() for line in live.splitlines()
            if line.startswith(("nlp-large ", "vision-small ", "ops-urgent "))}
    assert all(row[4] == "yes" for row in rows.values()), live  # on time
    assert rows["nlp-large"][3] == "2" and float(rows["nlp-large"][8]) > 0, live  # two runs, money saved
    assert float(live.split("USD spent, ")[1].split(" USD saved")[0]) > 0
    # Every job registered its model; one is promoted, and its card shows where it came from.
    registry = live[live.index("The models the jobs registered"):]
    for name in ("nlp-regressor", "vision-regressor", "ops-regressor"):
        assert f"\n{name} " in registry
    assert "nlp-regressor@production -> v1" in registry
    card = registry[registry.index("Their cards"):]
    assert card.count("lineage") == 3
    assert "nlp-regressor:1  (checkpoint" in card and "aliases here: production" in card
    served = live[live.index("`factory deploy nlp-regressor@production`"):]
    assert served.startswith("`factory deploy nlp-regressor@production`: endpoint nlp-regressor: v1 100%")
    answers = [line for line in served.splitlines() if line.strip().startswith("POST http://")]
    assert len(answers) == 3 and all('"model": "nlp-regressor:1", "prediction": {"y": ' in a for a in answers)
    assert "job: " in card and "team nlp" in card and " kWh " in card and "sha256" in card
    # The grid chapter: an event ~23 % under the measured power caps the preemptible job's GPUs rather
    # than pausing it, never touches the fixed load; a job submitted during it waits; measured power goes
    # under the target in time; the caps are restored after it.
    grid = out[out.index("== 7. Answering the grid"):]
    narrated = [line.split(maxsplit=7) for line in grid.splitlines() if " kW  grid-" in line]
    transitions = {(words[5], words[6]) for words in narrated}
    assert ("grid-flex", "PAUSING") not in transitions, grid
    assert ("grid-steady", "PAUSING") not in transitions, grid
    assert "grid-flex trains on: its 2 GPUs capped at" in grid, grid  # a cap, not a pause, where one will do
    assert ("grid-late", "WAITING") in transitions and ("grid-late", "RUNNING") in transitions, grid
    window = re.search(r"grid event ev-\w+: (\d\d:\d\d)-(\d\d:\d\d) UTC", grid)
    assert window is not None, grid
    started = next(words[0] for words in narrated if words[5:7] == ["grid-late", "RUNNING"])
    assert started >= window.group(2), grid  # it waited until the event was over
    assert "measured: under the" in grid, grid
    assert "the event is over: grid-flex's GPUs are back at their full limit" in grid, grid
    outcome = next(line for line in grid.splitlines()
                   if line.startswith("grid event ") and "baseline" in line)
    assert outcome.endswith("complied: yes"), grid
    assert "factory taken down" in out and "Ray dashboard at http://" in out
    assert run("status", check=False).returncode == 1  # nothing left running


def minutes(clock: str) -> int:
    """'03:48' -> 228."""
    hours, mins = clock.split(":")
    return 60 * int(hours) + int(mins)


def test_up_with_an_unusable_state_dir_fails_in_one_line_and_starts_nothing(
    no_ray_running: None, tmp_path: Path
) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    config = write_config(tmp_path / "factory.yaml", state_dir=tmp_path / "a_file" / "state")
    result = make_runner(config, cwd=tmp_path)("up", check=False)

    assert result.returncode == 2
    assert result.stderr.startswith("error: state_dir") and len(result.stderr.splitlines()) == 1
    assert "FACTORY_STATE_DIR" in result.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import ray; ray.init(address='auto')"],
        env=clean_env(), capture_output=True, timeout=120,
    )
    assert probe.returncode != 0  # no Ray head was left behind


DEMO_TIMEOUT_S = 1200.0
KILL_SCHEDULER = (
    "import ray\n"
    "from factory.control_plane import SCHEDULER\n"
    "from factory.ray_cluster import NAMESPACE\n"
    "ray.init(address='auto', namespace=NAMESPACE, logging_level='ERROR', log_to_driver=False)\n"
    "ray.kill(ray.get_actor(SCHEDULER), no_restart=False)\n"  # Ray restarts it, as it would a crash
)


def test_the_demo_rides_out_its_scheduler_killed_while_the_jobs_train(
    no_ray_running: None, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "factory.yaml", state_dir=tmp_path / "state",
                          ray={"num_cpus": 2, "num_gpus": None})
    output = tmp_path / "demo.out"
    with output.open("w") as sink:
        demo = subprocess.Popen([FACTORY_BIN, "demo", "--watch-s", "2"], cwd=tmp_path, text=True,
                                env=clean_env(FACTORY_CONFIG=str(config)), stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    killed, killed_at = None, 0
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        while demo.poll() is None and time.monotonic() < deadline:
            out = output.read_text()
            live = out.find("== 6. Live training")
            if killed is None and live >= 0 and " RUNNING " in out[live:]:
                # A job trains: the control plane's scheduler dies (and is restarted by Ray).
                killed = subprocess.run([sys.executable, "-c", KILL_SCHEDULER], env=clean_env(),
                                        capture_output=True, text=True, timeout=120, cwd=tmp_path)
                killed_at = len(output.read_text())
            time.sleep(0.5)
    finally:
        if demo.poll() is None:
            demo.kill()
    out = output.read_text()
    assert demo.returncode == 0, out[-4000:]
    assert killed is not None and killed.returncode == 0, (killed and killed.stderr[-2000:], out[-3000:])
    assert "Traceback" not in out
    live = out[out.index("== 6. Live training"):]
    states = {(line.split()[4], line.split()[5]) for line in live.splitlines() if " USD/MWh  " in line}
    for name in ("nlp-large", "vision-small", "ops-urgent"):
        assert (name, "REGISTERED") in states, live  # every job ran to its end and registered its model
    after_kill = out[killed_at:]
    assert " SUCCEEDED " in after_kill or " REGISTERED " in after_kill  # runs went on after the kill
    rows = {line.split()[0]: line.split() for line in live.splitlines()
            if line.startswith(("nlp-large ", "vision-small ", "ops-urgent "))}
    assert set(rows) == {"nlp-large", "vision-small", "ops-urgent"}
    assert all(row[4] == "yes" for row in rows.values()), live  # still on time
