"""Benchmark the factory's model server against a bare Ray Serve deployment of the same model.

One local Ray cluster, the factory up, Serve's HTTP proxy on one port, two applications side by side:

- **bare**: what a user would write by hand with Ray Serve: a deployment holding the regression MLP,
  `@serve.batch` with the same batch size and wait, parsing the JSON body and answering {"y": ...}.
- **factory**: `factory deploy` of the same weights registered in the registry (the factory's server:
  schema validation, traffic split, per-version stats and Ray metrics, errors answered with ids).

Both get one replica with the same CPUs. The same load generator (aiohttp, N concurrent connections
in this process, each POSTing as soon as its previous answer came) runs rounds of `--seconds`
against each, back to back in every round (bare then factory, then factory then bare: ABBA, so a
drift of the machine favours neither). Reported: throughput (answers/s) and client-side p50/p99
latency of each, and the ratios factory / bare as the median over the rounds (a shared 2-core
machine swings by 20 % between rounds; within a round both sides see the same machine). Targets:
throughput at least 0.95 of bare; p50 and p99 latency at most 1.05 of bare.

    python bench/serving.py [--seconds 4] [--rounds 10] [--concurrency 16] [--hidden 256]

It starts and stops its own Ray cluster (`ray stop` at the end stops every Ray on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_THROUGHPUT = 0.95
TARGET_LATENCY = 1.05
PREDICTOR = "factory.examples.regression:RegressionPredictor"
RAY_STOP = [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"]
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load_round(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    """(answers, latencies in ms, failures) of `concurrency` clients POSTing for `seconds`."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    body = json.dumps({"x1": 0.4, "x2": -0.3}).encode()
    headers = {"content-type": "application/json"}
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    failures += 1
                    continue
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return len(latencies), latencies, failures


def bare_app(state: dict[str, np.ndarray], hidden: int, batch_size: int, wait_s: float, cpus: float) -> Any:
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(ray_actor_options={"num_cpus": cpus}, max_ongoing_requests=64)
    class BareRegression:
        def __init__(self, arrays: dict[str, np.ndarray]) -> None:
            import torch

            from factory.examples.regression import build_model

            self.torch = torch
            self.model = build_model(hidden)
            self.model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
            self.model.eval()

        @serve.batch(max_batch_size=batch_size, batch_wait_timeout_s=wait_s)
        async def predict(self, points: list[tuple[float, float]]) -> list[dict[str, float]]:
            x = self.torch.tensor(points, dtype=self.torch.float32)
            with self.torch.inference_mode():
                return [{"y": y} for y in self.model(x)[:, 0].tolist()]

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            return {"prediction": await self.predict((float(body["x1"]), float(body["x2"])))}

    return BareRegression.bind(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica (both servers)")
    args = parser.parse_args()

    import ray
    import torch
    import yaml
    from ray import serve

    import factory.client
    from factory import lifecycle
    from factory.config import load_config
    from factory.examples.regression import build_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    port = free_port()
    (tmp / "factory.yaml").write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"), "ray": {"num_cpus": 4, "num_gpus": 0},
        "scheduler": {"policy": "fifo"},
        "serving": {"http_port": port, "replica_cpus": args.cpus},
    }))
    config = load_config(tmp / "factory.yaml", env={})
    subprocess.run(RAY_STOP, capture_output=True)
    try:
        lifecycle.up(config)
        client = factory.client.connect(config=config)
        torch.manual_seed(0)
        model = build_model(args.hidden)
        client.register(model.state_dict(), "bench", predictor=PREDICTOR)
        view = client.deploy("bench:1", replicas=1)
        settings = config.serving
        arrays = {key: value.numpy() for key, value in model.state_dict().items()}
        serve.run(bare_app(arrays, args.hidden, settings.max_batch_size, settings.batch_wait_timeout_s,
                           args.cpus), name="bare", route_prefix="/bare")
        urls = {"bare": f"http://127.0.0.1:{port}/bare", "factory": view["url"]}
        for url in urls.values():  # warm both up: first requests load, compile, open connections
            asyncio.run(load_round(url, 2.0, args.concurrency))
        pairs: list[dict[str, tuple[int, list[float], int]]] = []
        for round_index in range(args.rounds):
            # ABBA: the order alternates, so a drift of the machine's speed favours neither side.
            order = list(urls) if round_index % 2 == 0 else list(reversed(urls))
            pair = {name: asyncio.run(load_round(urls[name], args.seconds, args.concurrency))
                    for name in order}
            pairs.append(pair)
            print(f"round {round_index + 1}: " + "  ".join(
                f"{name} {pair[name][0] / args.seconds:6.1f}/s p50 {statistics.median(pair[name][1]):5.1f} ms"
                for name in urls), flush=True)
    finally:
        try:
            lifecycle.down(config)
        finally:
            ray.shutdown()
            subprocess.run(RAY_STOP, capture_output=True)

    def ratio(pair: dict[str, tuple[int, list[float], int]], what: str) -> float:
        if what == "throughput":
            return pair["factory"][0] / pair["bare"][0]
        q = 50 if what == "p50" else 99
        return float(np.percentile(pair["factory"][1], q) / np.percentile(pair["bare"][1], q))

    print(f"\n{args.rounds} rounds of {args.seconds:g} s per server (ABBA order), {args.concurrency} "
          f"concurrent clients, MLP hidden={args.hidden}, 1 replica of {args.cpus:g} CPU each")
    for name in ("bare", "factory"):
        latencies = [ms for pair in pairs for ms in pair[name][1]]
        rate = sum(pair[name][0] for pair in pairs) / (args.seconds * len(pairs))
        print(f"  {name:8s} {rate:8.1f} answers/s  p50 {np.percentile(latencies, 50):6.2f} ms  "
              f"p99 {np.percentile(latencies, 99):6.2f} ms  failed {sum(pair[name][2] for pair in pairs)}")
    print("factory/bare, median over the rounds (each round runs both, back to back):")
    for what, target, better in (("throughput", TARGET_THROUGHPUT, "higher"),
                                 ("p50", TARGET_LATENCY, "lower"), ("p99", TARGET_LATENCY, "lower")):
        ratios = [ratio(pair, what) for pair in pairs]
        value = statistics.median(ratios)
        met = value >= target if better == "higher" else value <= target
        sign = ">=" if better == "higher" else "<="
        print(f"  {what:10s} {value:.3f} (target {sign} {target}; "
              f"rounds {min(ratios):.2f}-{max(ratios):.2f}) {'PASS' if met else 'MISS'}")


if __name__ == "__main__":
    main()
