"""Benchmark the model registry: register and load a torch model, beside the object store and MLflow.

Per model size (100 MB and 1 GB of float32 by default: 4 `nn.Linear` layers), best of N rounds, all
variants side by side in one run on one local Ray cluster with the factory up:

- **register**: `client.register(state_dict, name)` (torch.save streamed into storage with its sha256,
  the commit), beside a raw `ray.put` of the same state_dict.
- **cold load**: the first `client.load` after a registration, a miss of the hot cache: the registry
  actor verifies the file's sha256 in storage (page cache, in practice: it was just written), maps it
  (`torch.load(mmap=True)`) and puts the arrays into the object store; the driver then reads them.
- **hot load**: `client.load(name, version=V)` again: the SDK remembers the reference to a version's
  hot copy (versions never change), so this is a `ray.get` of the registry's copy and
  `torch.from_numpy`, no call to the registry; beside a raw `ray.get` of the same tensors. A load by
  name or alias must ask the registry which version that is now (one actor call, then the get): shown
  too, as "hot load by name". The fair raw equivalent is an object *owned by another actor*,
  read by the driver: the registry actor owns its hot copies, so the driver reads through the object
  store as it does here (the driver's own `ray.put` is shown too). Two raw forms: the registry keeps
  numpy arrays, which Ray reads zero-copy, and turns them into tensors (`torch.from_numpy`); the raw
  baseline doing the very same is the strict one and the target's. A state_dict of torch tensors
  `ray.put` as is (what a user would write) is deserialized by copying, and is shown for reference.
  Speed relative to raw = raw time / registry time. Target: at least 0.8. Also shown: an empty actor
  call, and the registry's path without the registry (ask an actor for the ref, then `ray.get`).
- **MLflow**: `mlflow.pytorch.log_model` and `mlflow.pytorch.load_model` of the same module (same
  weights, same torch) with a local file store, in a separate virtualenv made for the benchmark
  (MLflow is no dependency of the factory), in a subprocess, after Ray is down. Its cheapest path:
  `serialization_format="pickle"` (torch.save of the module; 3.x defaults to "pt2", a torch.export
  trace), `pip_requirements` given (no environment inference; the registry records none either), and
  `MLFLOW_ALLOW_FILE_STORE` (3.x refuses the file store otherwise). Ratios MLflow time / registry
  time: register against log_model, cold and hot load against load_model (MLflow has no hot copy:
  each load reads its artifact store). Aim: several times faster.

    python bench/registry.py [--sizes-mb 100 1000] [--rounds 3] [--skip-mlflow] [--mlflow-venv DIR]

It starts and stops its own Ray cluster (`ray.cluster_utils`, as bench/training.py, with an object
store sized for the largest model: `ray.*` in the factory's config has no such field, and the local
head that `factory up` starts is stopped with `ray stop`, which stops every Ray on the machine). It
leaves nothing behind but the MLflow virtualenv, under the system temp dir, reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_HOT_RELATIVE = 0.8  # registry hot load speed / raw object-store speed
LAYERS = 4
HOT_REPEATS = 10  # hot loads and raw gets per round (cheap, so best of more)
MB = 1_000_000
GIB = 1 << 30
DEFAULT_MLFLOW_VENV = Path(tempfile.gettempdir()) / "factory-bench-mlflow-venv"
MLFLOW_INSTALL_TIMEOUT_S = 1800


@dataclass
class SizeResult:
    """Best-of-rounds seconds of every variant for one model size."""

    size_mb: int
    width: int
    nbytes: int
    times: dict[str, list[float]] = field(default_factory=dict)
    mlflow: dict[str, Any] | None = None
    mlflow_skip: str = ""

    def add(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def best(self, key: str) -> float:
        return min(self.times[key])


def width_for(size_mb: int) -> int:
    """The width of `LAYERS` square `nn.Linear` layers (with bias) holding about `size_mb` MB of float32."""
    return max(1, int(math.sqrt(size_mb * MB / (4 * LAYERS))))


def build_model(width: int) -> Any:
    import torch

    return torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(LAYERS)))


def timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call(*args, **kwargs)
    return time.perf_counter() - started, value


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms" if seconds < 1 else f"{seconds:8.2f} s "


def fmt_x(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


# -- the registry against the object store ------------------------------------------------------------


def up(tmp: Path, name: str, **sections: Any) -> tuple[Any, Any]:
    """The factory on the Ray cluster this process is connected to (as in bench/training.py)."""
    import yaml

    from factory import lifecycle
    from factory.config import load_config

    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp / name), **sections}))
    config = load_config(path, env={})
    return config, lifecycle.up(config).client


def holder_actor() -> Any:
    """An actor that re-puts what it is given, so that the driver reads an object another process owns."""
    import ray

    class Holder:
        def __init__(self) -> None:
            self.kept: list[Any] = []

        def hold(self, refs: list[Any]) -> list[Any]:
            return [ray.put(ray.get(refs[0]))]

        def keep(self, refs: list[Any] | None) -> None:
            self.kept = [ray.put(ray.get(refs[0]))] if refs else []

        def kept_ref(self) -> list[Any]:
            return self.kept

        def ping(self) -> None:
            return None

    return ray.remote(num_cpus=0)(Holder).remote()


def as_tensors(arrays: dict[str, Any]) -> dict[str, Any]:
    import torch

    with warnings.catch_warnings():  # object-store memory is read-only, as in the registry
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return {key: torch.from_numpy(array) for key, array in arrays.items()}


def measure_size(client: Any, holder: Any, result: SizeResult, state: dict[str, Any], rounds: int) -> None:
    import ray
    import torch

    def numpy_state() -> dict[str, Any]:
        return {key: value.numpy() for key, value in state.items()}

    def get_as_tensors(ref: Any) -> dict[str, Any]:
        return as_tensors(ray.get(ref))

    def ask_then_get() -> dict[str, Any]:  # the registry's path with nothing of the registry in it
        return as_tensors(ray.get(ray.get(holder.kept_ref.remote())[0]))

    name = f"bench-{result.size_mb}mb"
    first = next(iter(state))
    for _ in range(rounds):
        seconds, row = timed(client.register, state, name)
        result.add("register", seconds)
        seconds, torch_ref = timed(ray.put, state)
        result.add("put_torch", seconds)
        seconds, numpy_ref = timed(lambda: ray.put(numpy_state()))
        result.add("put_numpy", seconds)

        misses = client.registry.cache_stats()["misses"]
        seconds, loaded = timed(client.load, name, version=row.version)
        assert client.registry.cache_stats()["misses"] > misses, "the first load after register hit the cache"
        assert torch.equal(loaded[first], state[first]), "the registry loaded other weights"
        result.add("cold", seconds)
        loaded = None

        torch_held = ray.get(holder.hold.remote([torch_ref]))[0]
        numpy_held = ray.get(holder.hold.remote([numpy_ref]))[0]
        ray.get(holder.keep.remote([numpy_ref]))  # a copy the driver holds no ref to, as with the registry's
        for repeat in range(HOT_REPEATS):  # interleaved, so that the machine's moods hit every variant
            # The copying get first: what follows a large copy runs slower for a while, so the registry's
            # hot load and its baseline come right after one another, in alternating order.
            result.add("get_torch_actor", timed(ray.get, torch_held)[0])
            pair = [("hot", client.load, (name,), {"version": row.version}),  # the result is dropped at once
                    ("get_numpy_actor", get_as_tensors, (numpy_held,), {})]
            for key, call, args, kwargs in pair[::-1] if repeat % 2 else pair:
                result.add(key, timed(call, *args, **kwargs)[0])
            hits = client.registry.cache_stats()["hits"]
            result.add("hot_by_name", timed(client.load, name)[0])
            assert client.registry.cache_stats()["hits"] > hits, "a load by name missed the cache"
            result.add("fetch_rpc", timed(client.registry.fetch_info, name)[0])
            result.add("empty_call", timed(lambda: ray.get(holder.ping.remote()))[0])
            result.add("get_numpy_driver", timed(get_as_tensors, numpy_ref)[0])
            result.add("call_then_get", timed(ask_then_get)[0])
        torch_ref = numpy_ref = torch_held = numpy_held = None  # free this round's copies before the next
        ray.get(holder.keep.remote(None))  # and the holder's


def run_registry(sizes: list[SizeResult], rounds: int, store_bytes: int, cache_bytes: int,
                 states: dict[int, Path], tmp: Path) -> None:
    import ray
    import torch
    from ray.cluster_utils import Cluster

    from factory import lifecycle

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "object_store_memory": store_bytes})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        config, client = up(tmp, "registry", registry={"cache_bytes": cache_bytes})
        try:
            holder = holder_actor()
            for result in sizes:
                torch.manual_seed(result.size_mb)
                model = build_model(result.width)
                state = model.state_dict()
                if result.size_mb in states:  # what the MLflow subprocess logs
                    torch.save(state, states[result.size_mb])
                measure_size(client, holder, result, state, rounds)
                del model, state
        finally:
            lifecycle.down(config)
    finally:
        ray.shutdown()
        cluster.shutdown()


# -- MLflow ---------------------------------------------------------------------------------------------


def mlflow_python(venv: Path) -> tuple[Path | None, str]:
    """The MLflow virtualenv's python (made once: `pip install mlflow torch`), or None and why not."""
    import torch

    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mlflow, torch"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python, ""
    print(f"installing MLflow into {venv} (once; a few minutes)", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", "mlflow", f"torch=={torch.__version__}"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=MLFLOW_INSTALL_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(step[-4:])}` timed out after {MLFLOW_INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"]
            return None, f"`{' '.join(step[-4:])}` failed: {lines[-1]}"
    return python, ""


def run_mlflow(python: Path, result: SizeResult, state_path: Path, rounds: int, tmp: Path) -> None:
    spec = {"state_path": str(state_path), "width": result.width, "rounds": rounds,
            "dir": str(tmp / f"mlflow-{result.size_mb}mb")}
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = [str(python), str(Path(__file__).resolve()), "--mlflow-worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=tmp)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"]
        result.mlflow_skip = f"the MLflow run failed: {why[-1]}"
        return
    result.mlflow = json.loads(lines[-1])


def mlflow_worker(spec: dict[str, Any]) -> None:
    """In the MLflow virtualenv: log and load the module `rounds` times; print JSON seconds."""
    import inspect
    import logging

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3.x refuses the file store unless told
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # nothing leaves the machine
    import mlflow
    import mlflow.pytorch
    import torch

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    model = build_model(spec["width"])
    model.load_state_dict(torch.load(spec["state_path"], weights_only=True))
    mlflow.set_tracking_uri("file:" + spec["dir"])
    mlflow.set_experiment("registry-bench")
    parameters = inspect.signature(mlflow.pytorch.log_model).parameters
    options: dict[str, Any] = {"name" if "name" in parameters else "artifact_path": "model",
                               "pip_requirements": [f"torch=={torch.__version__}"]}  # no inference
    if "serialization_format" in parameters:  # 3.x defaults to "pt2": torch.export, needs an input
        options["serialization_format"] = "pickle"  # torch.save of the module: the weights, as ours
    first = next(iter(model.state_dict()))
    log_s, load_s = [], []
    for _ in range(spec["rounds"]):
        with mlflow.start_run():
            seconds, info = timed(mlflow.pytorch.log_model, model, **options)
        log_s.append(seconds)
        seconds, loaded = timed(mlflow.pytorch.load_model, info.model_uri)
        load_s.append(seconds)
        assert torch.equal(loaded.state_dict()[first], model.state_dict()[first])
        del loaded
    print(json.dumps({"version": mlflow.__version__, "log_model": log_s, "load_model": load_s}))


# -- report ---------------------------------------------------------------------------------------------


def report(result: SizeResult, rounds: int) -> bool:
    best = result.best

    def row(label: str, seconds: float, note: str = "") -> None:
        print(f"  {label:<66}{fmt_s(seconds)}{'   ' + note if note else ''}")

    print(f"{result.size_mb} MB model ({LAYERS} x Linear {result.width}x{result.width} + bias, "
          f"{result.nbytes / MB:,.1f} MB float32), best of {rounds} rounds "
          f"(hot loads and gets: best of {rounds * HOT_REPEATS}):")
    row("register (torch.save streamed to storage with sha256, commit)", best("register"))
    row("  raw ray.put of the state_dict, torch tensors", best("put_torch"))
    row("  raw ray.put of the state_dict, as numpy arrays", best("put_numpy"))
    row("cold load (miss: verify sha256, map, put; get)", best("cold"),
        f"rounds: {', '.join(fmt_s(t).strip() for t in result.times['cold'])}")
    row("hot load of a version (get of the registry's copy, torch.from_numpy)", best("hot"))
    row("hot load by name (one registry call, get, torch.from_numpy)", best("hot_by_name"))
    row("  of which the fetch call alone", best("fetch_rpc"))
    row("  raw ray.get + torch.from_numpy, numpy arrays owned by an actor", best("get_numpy_actor"),
        "the target's baseline")
    row("  raw ray.get + torch.from_numpy, numpy arrays owned by the driver", best("get_numpy_driver"))
    row("  raw ray.get, torch tensors owned by an actor (a copy)", best("get_torch_actor"))
    row("  an empty actor call", best("empty_call"))
    row("  raw: ask the owning actor for the ref (one call), then get", best("call_then_get"))
    if result.mlflow is not None:
        log_s, load_s = min(result.mlflow["log_model"]), min(result.mlflow["load_model"])
        row(f"MLflow {result.mlflow['version']} log_model (local file store)", log_s)
        row(f"MLflow {result.mlflow['version']} load_model", load_s)
    relative = best("get_numpy_actor") / best("hot")
    ok = relative >= TARGET_HOT_RELATIVE
    print(f"  hot load speed relative to raw (zero-copy, actor-owned): {relative:.2f}  "
          f"(target >= {TARGET_HOT_RELATIVE})  {'PASS' if ok else 'FAIL'}")
    print(f"  relative to raw torch tensors: {best('get_torch_actor') / best('hot'):.1f}; by name, "
          f"to asking the owner then get: {best('call_then_get') / best('hot_by_name'):.2f}")
    if result.mlflow is not None:
        print(f"  MLflow/registry: register {fmt_x(log_s / best('register'))}, cold load "
              f"{fmt_x(load_s / best('cold'))}, hot load {fmt_x(load_s / best('hot'))}")
    else:
        print(f"  MLflow: skipped ({result.mlflow_skip})")
    return ok


def object_store_bytes(largest_bytes: int, cache_bytes: int) -> int:
    # The registry's hot copies (a new one is put before the old is evicted), the raw copies of one round
    # (driver- and actor-owned, two forms, and the holder's own), slack.
    return cache_bytes + 6 * largest_bytes + GIB // 2


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--mlflow-worker":
        mlflow_worker(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--mlflow-venv", type=Path, default=DEFAULT_MLFLOW_VENV)
    args = parser.parse_args()
    started = time.perf_counter()

    sizes = []
    shm_free = shutil.disk_usage("/dev/shm").free if Path("/dev/shm").is_dir() else None
    for size_mb in sorted(args.sizes_mb):
        width = width_for(size_mb)
        nbytes = 4 * LAYERS * (width * width + width)
        cache = int(1.5 * nbytes) + GIB // 4
        needed = object_store_bytes(nbytes, cache)
        if shm_free is not None and needed > 0.9 * shm_free:
            print(f"note: {size_mb} MB skipped: its object store ({needed / GIB:.1f} GiB) does not fit in "
                  f"/dev/shm ({shm_free / GIB:.1f} GiB free)")
            continue
        sizes.append(SizeResult(size_mb, width, nbytes))
    if not sizes:
        print("summary: nothing to measure")
        return
    largest = max(result.nbytes for result in sizes)
    cache_bytes = int(1.5 * largest) + GIB // 4  # one version of the largest model and the smaller ones
    store_bytes = object_store_bytes(largest, cache_bytes)
    print(f"local Ray: 2 CPUs, object store {store_bytes / GIB:.1f} GiB; registry cache "
          f"{cache_bytes / GIB:.1f} GiB; raw baselines: the same state_dict through ray.put/ray.get")

    with tempfile.TemporaryDirectory(prefix="factory-bench-registry-") as directory:
        tmp = Path(directory)
        states = {} if args.skip_mlflow else {r.size_mb: tmp / f"state-{r.size_mb}mb.pt" for r in sizes}
        run_registry(sizes, args.rounds, store_bytes, cache_bytes, states, tmp)
        if args.skip_mlflow:
            skip = "--skip-mlflow"
        else:
            python, skip = mlflow_python(args.mlflow_venv)
        for result in sizes:
            if not skip:
                run_mlflow(python, result, states[result.size_mb], args.rounds, tmp)
            result.mlflow_skip = result.mlflow_skip or skip
            if result.size_mb in states:
                states[result.size_mb].unlink(missing_ok=True)
        verdicts = [report(result, args.rounds) for result in sizes]
    total_s = time.perf_counter() - started
    print(f"summary: {sum(verdicts)}/{len(verdicts)} hot-load targets met; total {total_s:.0f} s")


if __name__ == "__main__":
    main()
