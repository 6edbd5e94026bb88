"""One benchmark cell (task, algo, seed): data -> training -> evaluation -> results.

The loop talks to algorithms only through the protocol in qtbench.algorithms.base and
reads the sampler settings (dataset, history, n_step, gamma, batch_size) from the
algorithm's config, so it never branches on an algorithm's name.

Reproducibility: the model is initialised after ``torch.manual_seed(seed)``, batches are
drawn with a numpy Generator seeded from the seed, and a checkpoint stores the model,
its optimisers, both RNG states and the metrics so far. A run resumed from step k
therefore takes exactly the steps an uninterrupted run takes, and ends with the same
weights, the same eval.json success numbers and the same metrics.csv rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import signal
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qtbench import checkpoint
from qtbench.algorithms import ALGORITHMS, AlgoConfig, algorithm_class
from qtbench.errors import QtbenchError, unknown_name
from qtbench.results import (
    EVAL_FILE,
    MetricsLog,
    cell_dir,
    qtbench_version,
    success_summary,
    write_config,
    write_eval,
)

log = logging.getLogger(__name__)

# The default training budget, in gradient steps, per algorithm (recorded in config.json as
# "steps" and "default_steps"). Sized so `qtbench run --algo q_transformer --task drawer_open`
# stays within ~15 minutes on 2 CPU cores with dataset generation included, leaving ~9 minutes
# for training and evaluation. Updates per CPU-second on the drawer_open shapes, 1 thread
# (`qtbench bench train --algo A --task drawer_open --threads 1`, the rate of an idle core),
# after issue 11's one-token instruction encoder, history 1 and bf16: Q-Transformer 22,
# BC 28, DT 8.5 (batch 64); before it Q-Transformer and BC ran ~6.5 and the budget was 3000.
# So Q-Transformer's 9000 steps take ~410 s, BC's ~320 s and DT's 3000 ~350 s. The budgets are
# close in wall-clock time rather than in steps: IQL's MLP update is ~8x cheaper than a
# transformer update was (50 vs 6-7 updates/s), and at 3000 steps it had not learned
# anything (0/30 on drawer_open; 20% after 12000). Success at the raised budgets was not
# re-measured with issue 11 (its check compared the old and new code at 3000 steps).
DEFAULT_STEPS: dict[str, int] = {
    "q_transformer": 9000,
    "bc": 9000,
    "iql": 20000,
    "dt": 3000,
    "cql": 3000,
}
FALLBACK_STEPS = 3000
LOG_EVERY = 50  # steps per metrics.csv row (metrics are averaged over those steps)
CHECKPOINT_EVERY = 500  # steps between checkpoints
DATA_SEED = 0  # datasets are fixed across run seeds: only the learner's seed varies


def default_steps(algo: str) -> int:
    return DEFAULT_STEPS.get(algo, FALLBACK_STEPS)


@dataclass
class RunSpec:
    """Everything that defines one run; ``qtbench run`` flags map one to one onto it."""

    algo: str
    task: str
    seed: int = 0
    steps: int | None = None  # None = default_steps(algo)
    profile: str = "default"
    results_dir: Path = Path("results")
    checkpoint_dir: Path = Path("checkpoints")
    overrides: dict[str, object] = field(default_factory=dict)  # algorithm config fields
    resume: bool = False
    eval_episodes_per_instruction: int | None = None  # None = evaluate.default_episodes(task)
    device: str = "cpu"
    video: bool = False
    force: bool = False  # with resume: discard an incompatible checkpoint instead of failing
    log_every: int = LOG_EVERY
    checkpoint_every: int = CHECKPOINT_EVERY
    progress: bool = True
    # torch intra-op threads; None keeps torch's default (one per core). 1 by default: on a
    # shared 2-core machine 2 threads measured ~12x slower per update (spinning OpenMP
    # workers compete with other processes), and a fixed count keeps CPU runs bit-exact
    # across machines with different core counts.
    threads: int | None = 1

    @property
    def total_steps(self) -> int:
        return default_steps(self.algo) if self.steps is None else int(self.steps)

    def resume_command(self) -> str:
        """The shell command that continues this run from its last checkpoint."""
        parts = ["qtbench", "run", "--algo", self.algo, "--task", self.task, "--seed", str(self.seed),
                 "--steps", str(self.total_steps), "--profile", self.profile,
                 "--results-dir", str(self.results_dir), "--checkpoint-dir", str(self.checkpoint_dir)]
        for key, value in self.overrides.items():
            parts += ["--set", f"{key}={value}"]
        if self.device != "cpu":
            parts += ["--device", self.device]
        if self.threads != 1:
            parts += ["--threads", str(self.threads or 0)]
        return shlex.join(parts + ["--resume"])


# ---- configuration -----------------------------------------------------------------------
def _convert(name: str, value: object, hint: Any) -> object:
    """Convert a --set string to the field's type (bool, int, float, str, tuple of those)."""
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (tuple, list):
        items = [v for v in value.split(",") if v.strip()]
        return origin(_convert(name, v.strip(), args[0] if args else str) for v in items)
    if origin is not None and args:  # Optional[X] / X | None
        if value.lower() == "none":
            return None
        hint = args[0]
    try:
        if hint is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint in (int, float, str):
            return hint(value)
    except ValueError as err:
        raise QtbenchError(
            f"--set {name}={value}: not a valid {getattr(hint, '__name__', hint)}",
            f"give {name} a {getattr(hint, '__name__', hint)} value",
        ) from err
    return value


def typed_overrides(config_class: type[AlgoConfig], overrides: dict[str, object]) -> dict[str, object]:
    """``overrides`` checked against the config's fields and converted to their types, so
    ``--set conservative=false`` and ``--no-conservative`` name the same run."""
    hints = typing.get_type_hints(config_class)
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = [key for key in overrides if key not in names]
    if unknown:
        raise QtbenchError(
            f"{config_class.__name__} has no field {', '.join(map(repr, unknown))}",
            f"--set / ablation flags can set: {', '.join(names)}",
        )
    return {k: _convert(k, v, hints[k]) for k, v in overrides.items()}


def resolve_config(config_class: type[AlgoConfig], overrides: dict[str, object]) -> AlgoConfig:
    """The algorithm's reference config with ``overrides`` applied (only existing fields)."""
    return config_class(**typed_overrides(config_class, overrides))


def check_names(algo: str, task: str) -> None:
    from qtbench.envs import TASKS

    if algo not in ALGORITHMS:
        raise unknown_name("algorithm", algo, list(ALGORITHMS))
    if task not in TASKS:
        raise unknown_name("task", task, list(TASKS))


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (model init, dropout) and return the batch-sampling Generator."""
    import torch

    torch.manual_seed(seed)
    # Cheap on CPU; on CUDA some kernels have no deterministic version, so only warn there.
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5A3]))


# ---- the loop --------------------------------------------------------------------------
class _InterruptFlag:
    """Turns the first Ctrl-C or SIGTERM into a flag checked between steps, so the checkpoint
    saved on interrupt is consistent (never half an optimiser step); a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.set = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class _PendingMetrics:
    """Sums of the ``update()`` metrics since the last metrics.csv row.

    Tensor metrics are summed where the model runs, so adding a step's metrics never waits
    for the device; ``read()`` does, once per log interval and per checkpoint. The sums
    are float64, added in step order: the same numbers as summing Python floats.
    """

    def __init__(self, sums: dict[str, float] | None = None, count: int = 0):
        self.sums: dict[str, Any] = dict(sums or {})
        self.count = count

    def add(self, result: dict[str, Any]) -> None:
        for key, value in result.items():
            value = value.detach().double() if hasattr(value, "detach") else float(value)
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def read(self) -> dict[str, float]:
        import torch

        tensors = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        values = dict(zip(tensors, torch.stack([self.sums[k] for k in tensors]).tolist())) if tensors else {}
        return {k: values.get(k, v) for k, v in self.sums.items()}


@dataclass
class TrainOutcome:
    steps: int
    seconds: float
    metrics: MetricsLog


def train(
    algorithm: Any,
    sampler: Any,
    rng: np.random.Generator,
    spec: RunSpec,
    algo_config: dict[str, Any],
    ckpt_dir: Path,
    out_dir: Path,
    state: checkpoint.TrainState | None = None,
) -> TrainOutcome:
    """Run gradient steps up to ``spec.total_steps``, starting from ``state`` if given.

    Writes metrics.csv into ``out_dir`` and checkpoints into ``ckpt_dir`` every
    ``spec.checkpoint_every`` steps and at the end. Metrics are read from the device only
    at those points, so a diverged loss is caught at the next one, before it is saved.
    """
    import torch
    from tqdm import tqdm

    cfg = algorithm.config
    total = spec.total_steps
    step, offset = 0, 0.0
    metrics = MetricsLog()
    pending = _PendingMetrics()
    if state is not None:
        algorithm.load_state_dict(state.algorithm)
        rng.bit_generator.state = state.sampler_rng
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state.cuda_rng)
        step, offset = state.step, state.wall_seconds
        metrics = MetricsLog(list(state.metrics))
        pending = _PendingMetrics(state.pending, state.pending_count)
    if step > total:
        raise QtbenchError(
            f"the checkpoint in {ckpt_dir} is at step {step}, past the requested {total} steps",
            f"use --steps {step} or more, or start fresh without --resume",
        )
    start_time = time.perf_counter()

    def elapsed() -> float:
        return offset + time.perf_counter() - start_time

    def read_finite() -> dict[str, float]:
        """The pending sums, after checking the loss stayed finite since the last read."""
        sums = pending.read()
        if not math.isfinite(sums.get("loss", 0.0)):
            kept = (f"the last good checkpoint (step {last_good}) is kept in {ckpt_dir}"
                    if last_good is not None else "no checkpoint of this run was saved")
            raise QtbenchError(
                f"training diverged: the loss is {sums['loss']} within steps {step - pending.count + 1}-{step}; {kept}",
                "lower the learning rate (--set learning_rate=...) and start again, "
                "or change the seed",
            )
        return sums

    def save() -> None:
        sums = read_finite()
        checkpoint.save(ckpt_dir, checkpoint.TrainState(
            algo=spec.algo, algo_config=algo_config, step=step, algorithm=algorithm.state_dict(),
            sampler_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(),
            wall_seconds=elapsed(), metrics=metrics.rows, pending=sums, pending_count=pending.count,
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        ))
        _with_partial_row(metrics, sums, pending.count, step, elapsed()).write(out_dir)

    bar = tqdm(total=total, initial=step, desc=f"train {spec.algo}", unit="step",
               disable=not spec.progress, mininterval=1.0)
    # the checkpoint this segment resumed from counts as the last good one until a newer save
    seg_start_step, last_good = step, (step if state is not None else None)
    with _InterruptFlag() as interrupted:
        while step < total:
            batch = sampler.sample(cfg.batch_size, rng).to_torch(spec.device)
            pending.add(algorithm.update(batch))
            step += 1
            if step % spec.log_every == 0:
                row = _row(read_finite(), pending.count, step, elapsed())
                metrics.append(row)
                pending = _PendingMetrics()
                rate = (step - seg_start_step) / max(time.perf_counter() - start_time, 1e-9)
                bar.set_postfix(loss=f"{row['loss']:.4f}", upd_s=f"{rate:.1f}", refresh=False)
            if step % spec.checkpoint_every == 0 or step == total or interrupted.set:
                save()
                last_good = step
            bar.update(1)
            if interrupted.set:
                bar.close()
                log.warning("interrupted at step %d; checkpoint saved in %s\n  resume with: %s",
                            step, ckpt_dir, spec.resume_command())
                raise KeyboardInterrupt
    bar.close()
    sums = read_finite()
    if seg_start_step == total:  # nothing to train (already at the requested step): keep the csv whole
        _with_partial_row(metrics, sums, pending.count, step, elapsed()).write(out_dir)
    return TrainOutcome(step, elapsed(), _with_partial_row(metrics, sums, pending.count, step, elapsed()))


def _row(sums: dict[str, float], count: int, step: int, wall: float) -> dict[str, float]:
    loss = sums.get("loss", 0.0) / count
    rest = {k: v / count for k, v in sums.items() if k != "loss"}
    return {"step": step, "wall_seconds": wall, "loss": loss, **rest}


def _with_partial_row(metrics: MetricsLog, pending: dict[str, float], count: int, step: int, wall: float) -> MetricsLog:
    """The metrics with the unfinished interval as a last row (the checkpoint keeps it as sums,
    so a resumed run completes that interval instead of logging it twice)."""
    if not count:
        return metrics
    return MetricsLog(metrics.rows + [_row(pending, count, step, wall)])


# ---- one cell ------------------------------------------------------------------------------
def resolved_config(spec: RunSpec, algo_config: AlgoConfig, episodes: int) -> dict[str, Any]:
    return {
        "algo": spec.algo,
        "task": spec.task,
        "seed": spec.seed,
        "profile": spec.profile,
        "steps": spec.total_steps,
        "eval_episodes_per_instruction": episodes,
        "algo_config": dataclasses.asdict(algo_config),
        "qtbench_version": qtbench_version(),
        "data_seed": DATA_SEED,
        "device": spec.device,
        "log_every": spec.log_every,
        "checkpoint_every": spec.checkpoint_every,
        "default_steps": default_steps(spec.algo),
        "threads": spec.threads,
    }


def _initial_state(spec: RunSpec, ckpt_dir: Path, algo_config: dict[str, Any]) -> checkpoint.TrainState | None:
    """The checkpoint to continue from (only with --resume), after checking it fits."""
    path = checkpoint.checkpoint_path(ckpt_dir)
    if not spec.resume:
        if path.exists():
            log.warning("starting fresh: %s will be overwritten (pass --resume to continue it)", path)
        return None
    state = checkpoint.load(ckpt_dir)
    if state is None:
        log.info("no checkpoint in %s: starting from step 0", ckpt_dir)
        return None
    try:
        checkpoint.check_compatible(state, spec.algo, algo_config, path)
    except QtbenchError:
        if not spec.force:
            raise
        log.warning("--force: discarding incompatible checkpoint %s", path)
        return None
    log.info("resuming from %s at step %d", path, state.step)
    return state


def run_cell(spec: RunSpec) -> Path:
    """Ensure the datasets, train (checkpointing), evaluate, and write the cell's results.

    Returns the results directory of the cell. eval.json is written last and atomically;
    a stale one from an earlier run is removed first, so it never describes other weights.
    """
    import torch

    from qtbench.data import TransitionData, WindowSampler, ensure_datasets
    from qtbench.evaluate import default_episodes, evaluate_policy
    from qtbench.report import machine_description

    check_names(spec.algo, spec.task)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    cls = algorithm_class(spec.algo)
    config = resolve_config(cls.config_class, spec.overrides)
    config_dict = checkpoint.normalise_config(dataclasses.asdict(config))
    episodes = spec.eval_episodes_per_instruction or default_episodes(spec.task)
    out_dir = cell_dir(spec.results_dir, spec.task, spec.algo, spec.seed)
    ckpt_dir = cell_dir(spec.checkpoint_dir, spec.task, spec.algo, spec.seed)
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise QtbenchError("--device cuda requested but torch sees no CUDA device", "use --device cpu")

    state = _initial_state(spec, ckpt_dir, config_dict)
    ensure_datasets(spec.task, profile=spec.profile, seed=DATA_SEED)
    data = TransitionData.load(spec.task, config.dataset, successful_only=config.filtered)
    sampler = WindowSampler(data, config.history, config.n_step, config.gamma, config.timeout_is_terminal)

    rng = seed_everything(spec.seed)
    algorithm = cls(data.spec_info(), config, device=spec.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVAL_FILE).unlink(missing_ok=True)
    write_config(out_dir, resolved_config(spec, config, episodes))

    trained = train(algorithm, sampler, rng, spec, config_dict, ckpt_dir, out_dir, state)
    trained.metrics.write(out_dir)

    def act(window: Any) -> np.ndarray:
        return algorithm.act(window.to_torch(spec.device))

    outcomes, eval_seconds = evaluate_policy(
        act, spec.task, config.history, episodes, spec.seed, target_return=config.target_return,
        video_dir=ckpt_dir / "videos" if spec.video else None, progress=spec.progress,
    )
    record = {
        "algo": spec.algo,
        "task": spec.task,
        "seed": spec.seed,
        "profile": spec.profile,
        "train_steps": trained.steps,
        "train_seconds": trained.seconds,
        "eval_seconds": eval_seconds,
        "machine": machine_description(),
        "qtbench_version": qtbench_version(),
        **success_summary(outcomes),
    }
    write_eval(out_dir, record)
    return out_dir
