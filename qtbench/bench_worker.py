"""Timing one implementation of an algorithm: its updates on a synthetic batch and its batched
rollout (``act`` plus the environments), for `qtbench bench train`.

The same functions time this checkout in-process and, for ``--against REF``, the code of
git ref REF in a subprocess: run as a script (``python bench_worker.py ROOT``) this file
makes ``import qtbench`` load the package under ROOT (an export of REF) and answers JSON
commands on stdin, one per line. So it only uses qtbench APIs that the measured refs have
(``train_bench.suite_shapes``/``synthetic_batch``, ``algorithms.algorithm_class``,
``evaluate.run_episodes``/``EvalJob``, ``envs.make_env``), and imports them lazily.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROLLOUT_ENVS = 32  # environments stepped together, as in evaluation (evaluate.DEFAULT_NUM_ENVS)


def time_calls(call: Callable[[], object], seconds: float) -> tuple[int, float, float]:
    """(calls, wall seconds, process CPU seconds) of calling ``call`` until ``seconds`` of wall
    time have passed (at least once)."""
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        call()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n, elapsed, time.process_time() - cpu


@dataclasses.dataclass
class Trainee:
    """An algorithm built at the suite's shapes, with its update on one fixed synthetic batch."""

    algorithm: Any
    config: Any
    update: Callable[[], object]

    @property
    def modules(self) -> list[Any]:
        import torch

        return [m for m in vars(self.algorithm).values() if isinstance(m, torch.nn.Module)]


def build(algo: str, task: str, batch_size: int | None, seed: int, overrides: dict[str, Any]) -> tuple[Trainee, Any, list[str], str]:
    """The algorithm (default config, ``overrides`` applied), its update step, the task's
    EnvSpecInfo, instruction texts and a note on where the shapes came from."""
    import numpy as np
    import torch

    from qtbench.algorithms import algorithm_class
    from qtbench.train_bench import suite_shapes, synthetic_batch

    cls = algorithm_class(algo)
    config = cls.config_class(**overrides)
    config = dataclasses.replace(config, batch_size=batch_size or config.batch_size)
    spec, texts, note = suite_shapes(task)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    algorithm = cls(spec, config)
    batch = synthetic_batch(spec, config.history, config.gamma, config.batch_size, texts, rng).to_torch()
    return Trainee(algorithm, config, lambda: algorithm.update(batch)), spec, texts, note


def rollout(trainee: Trainee, task: str, texts: list[str], episodes: int, seed: int) -> dict[str, float]:
    """A batched greedy rollout of ``episodes`` episodes (``ROLLOUT_ENVS`` at a time) with the
    untrained weights, so every episode runs to the time limit: env steps and where the
    time went (``act`` vs the rest: simulation and windows)."""
    from qtbench.envs import make_env
    from qtbench.evaluate import EvalJob, run_episodes

    acting = [0.0]

    def act(window: Any) -> Any:
        start = time.process_time()
        out = trainee.algorithm.act(window.to_torch())
        acting[0] += time.process_time() - start
        return out

    jobs = [EvalJob(texts[i % len(texts)], seed + i) for i in range(episodes)]
    start, cpu = time.perf_counter(), time.process_time()
    outcomes, _ = run_episodes(act, lambda: make_env(task), jobs, trainee.config.history,
                               num_envs=ROLLOUT_ENVS, progress=False)
    return {
        "env_steps": float(sum(o.length for o in outcomes)), "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu, "act_cpu_seconds": acting[0],
    }


def _use_package_at(root: Path) -> None:
    """Make ``import qtbench`` (and its mapped subpackages) load from ``root``'s source tree."""
    import importlib.util
    import tomllib

    mapping = {"qtbench": "qtbench"}
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        setup = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {})
        mapping.update(setup.get("package-dir", {}))

    class Finder:
        @classmethod
        def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
            if name not in mapping:
                return None
            folder = root / mapping[name]
            return importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])

    sys.meta_path.insert(0, Finder)


def serve(root: Path) -> None:
    """Answer commands from stdin until it closes: init, round, rollout (see ``train_bench``)."""
    import torch

    _use_package_at(root)
    trainee = texts = task = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "init":
            torch.set_num_threads(cmd["threads"])
            task = cmd["task"]
            trainee, spec, texts, _ = build(cmd["algo"], task, cmd["batch_size"], cmd["seed"], {})
            for _ in range(cmd["warmup"]):
                trainee.update()
            from qtbench.train_bench import count_params

            reply: dict[str, Any] = {"params": count_params(*trainee.modules), "history": trainee.config.history,
                                     "amp": getattr(trainee.config, "amp", "none")}
        elif cmd["cmd"] == "round":
            n, elapsed, cpu = time_calls(trainee.update, cmd["seconds"])
            reply = {"n": n, "seconds": elapsed, "cpu_seconds": cpu}
        else:
            reply = rollout(trainee, task, texts, cmd["episodes"], cmd["seed"])
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
