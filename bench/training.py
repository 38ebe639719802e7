"""Benchmark what the factory adds to a training run, and how fast it catches a cheap window.

(a) Overhead: the shipped regression loop (2 workers x 1 simulated GPU, gloo on CPUs) run directly
    with `TorchTrainer.fit()` and through the factory (`client.submit` to SUCCEEDED, `fifo`, no price
    wait), interleaved in rounds (direct, factory, direct, factory, ...) on one Ray cluster; the
    ratio of the medians. Target: at most 1.10.
(b) Reaction: under `price-aware` with a replayed trace whose next hour is cheap, a job submitted in
    the dear hour waits; the real seconds between the cheap hour opening and (1) the RUNNING
    transition (the decision, written), (2) the runner starting the Ray Train run. Target for (1):
    under 1 s.

    python bench/training.py [--rounds 3] [--epochs 4]

It starts and stops its own Ray cluster (none may be running) and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.cluster_utils import Cluster

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO, TARGET_REACTION_S = 1.10, 1.0
SPEED = 120.0  # factory seconds per real second in part (b): an hour in 30 s


def spec(name: str, epochs: int) -> dict[str, Any]:
    base = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "train-regression.yaml").read_text())
    # No model registered: the ratio measures submit -> SUCCEEDED against bare Ray Train (registering
    # a checkpoint is the registry bench's).
    base.update(name=name, deadline="30d", max_retries=0, register_as=None)
    base["config"] = {**base["config"], "epochs": epochs}
    return base


def up(tmp: Path, name: str, **sections: Any) -> tuple[Any, Any]:
    from factory import lifecycle
    from factory.config import load_config

    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp / name), **sections}))
    config = load_config(path, env={})
    return config, lifecycle.up(config).client


def direct_fit(epochs: int, storage: Path, name: str) -> float:
    """Wall seconds of one `TorchTrainer.fit()` of the regression loop, as a user would run it."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from factory.examples.regression import train_loop_per_worker

    started = time.perf_counter()
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={**spec("x", epochs)["config"]},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=True, resources_per_worker={"CPU": 1, "GPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=name, storage_path=str(storage)))
    result = trainer.fit()
    assert result.error is None, result.error
    return time.perf_counter() - started


def factory_run(client: Any, epochs: int, name: str) -> float:
    """Wall seconds from `submit` to the job's SUCCEEDED (as `client.wait` sees it, polling 0.05 s)."""
    started = time.perf_counter()
    job_id = client.submit(spec(name, epochs))
    job = client.wait(job_id, timeout_s=600, poll_s=0.05)
    assert job.state == "SUCCEEDED", client.logs(job_id)
    return time.perf_counter() - started


def part_a(tmp: Path, rounds: int, epochs: int) -> bool:
    from factory import lifecycle

    config, client = up(tmp, "overhead", scheduler={"policy": "fifo", "tick_s": 1.0})
    direct, through = [], []
    try:
        direct_fit(1, tmp / "runs", "warm-up")  # imports, worker processes: paid once, by neither side
        for i in range(rounds):
            direct.append(direct_fit(epochs, tmp / "runs", f"direct-{i}"))
            through.append(factory_run(client, epochs, f"bench-{i}"))
    finally:
        lifecycle.down(config)
    ratio = statistics.median(through) / statistics.median(direct)
    ok = ratio <= TARGET_RATIO
    print(f"(a) {epochs} epochs, 2 workers x 1 simulated GPU, {rounds} interleaved rounds:")
    print(f"    TorchTrainer.fit() directly:      {' '.join(f'{t:5.1f}' for t in direct)} s  "
          f"median {statistics.median(direct):.1f} s")
    print(f"    through the factory (submit->end): {' '.join(f'{t:5.1f}' for t in through)} s  "
          f"median {statistics.median(through):.1f} s")
    print(f"    ratio factory/direct: {ratio:.3f}  (target <= {TARGET_RATIO})  {'PASS' if ok else 'FAIL'}")
    return ok


def part_b(tmp: Path, epochs: int) -> bool:
    from factory import lifecycle

    start = datetime(2024, 6, 20, tzinfo=UTC)
    prices = tmp / "prices.csv"
    prices.write_text("timestamp,price_per_mwh\n" + "".join(
        f"{(start + timedelta(hours=h)).isoformat()},{10 if h % 2 == 1 else 500}\n" for h in range(24 * 20)))
    replay = {"mode": "replay", "replay_start": "2024-07-01T00:05:00Z", "speed_factor": SPEED}
    config, client = up(tmp, "reaction", clock=replay,
                        prices={"source": "trace", "trace": {"paths": [str(prices)]}},
                        scheduler={"policy": "price-aware", "tick_s": 2.0})
    try:
        job_id = client.submit({**spec("reaction", epochs), "estimated_duration_s": 1200, "deadline": "3h"})
        clock = client.clock()
        boundary_s = 3600.0 * (clock.now_s() // 3600.0 + 1.0)  # 01:00, the cheap hour
        boundary_wall_s = time.time() + clock.wall_seconds_for(boundary_s - clock.now_s())
        job = client.wait(job_id, timeout_s=600, poll_s=0.2)
        assert job.state == "SUCCEEDED", client.logs(job_id)
        running_s = next(e.time_s for e in client.job(job_id).events if e.state == "RUNNING")
        decision_delay_s = clock.wall_seconds_for(running_s - boundary_s)
        log = client.logs(job_id)
        stamp = next(line[:23] for line in log.splitlines() if "attempt 1: starting" in line)
        runner_wall_s = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
    finally:
        lifecycle.down(config)
    ok = 0 <= decision_delay_s < TARGET_REACTION_S
    print(f"(b) price-aware, replay at {SPEED:g}x, a job submitted in the dear hour (tick_s 2):")
    print(f"    cheap hour opens -> RUNNING written: {decision_delay_s:.3f} s real "
          f"(target < {TARGET_REACTION_S:g} s)  {'PASS' if ok else 'FAIL'}")
    runner_delay_s = runner_wall_s - boundary_wall_s
    print(f"    cheap hour opens -> the runner starts the Ray Train run: {runner_delay_s:.2f} s real")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 2})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="factory-bench-training-") as directory:
            tmp = Path(directory)
            verdicts = [part_a(tmp, args.rounds, args.epochs), part_b(tmp, args.epochs)]
    finally:
        ray.shutdown()
        cluster.shutdown()
    total_s = time.perf_counter() - started
    print(f"summary: {sum(verdicts)}/{len(verdicts)} targets met; total {total_s:.0f} s")


if __name__ == "__main__":
    main()
