"""One benchmark cell (task, algo, seed): data -> training -> evaluation -> results.

The loop talks to algorithms only through the protocol in qtbench.algorithms.base and
reads the sampler settings (dataset, history, n_step, gamma, batch_size) from the
algorithm's config, so it never branches on an algorithm's name.

Reproducibility: the model is initialised after ``torch.manual_seed(seed)``, batches are
drawn with a numpy Generator seeded from the seed, and a checkpoint stores the model,
its optimisers, both RNG states and the metrics so far. A run resumed from step k
therefore takes exactly the steps an uninterrupted run takes, and ends with the same
weights, the same eval.json success numbers and the same metrics.csv rows.

Learning curve: at ``curve_points`` evenly spaced steps (the last is the final step) the
policy is evaluated on a fixed prefix of the run's evaluation episodes. Those evaluations
run under ``torch.random.fork_rng`` and never touch the sampling Generator, so a run with
a curve takes the same gradient steps as one without; their points are kept in the
checkpoint, and their time is not counted as training time.
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
from typing import Any, Callable

import numpy as np

from qtbench import checkpoint
from qtbench.algorithms import ALGORITHMS, AlgoConfig, algorithm_class, default_steps
from qtbench.envs.instructions import MULTI_TASK
from qtbench.errors import QtbenchError, unknown_name
from qtbench.results import (
    CONFIG_FILE,
    CURVE_FILE,
    CURVE_KEY,
    EVAL_FILE,
    METRICS_FILE,
    MetricsLog,
    base_root,
    cell_dir,
    curve_point,
    qtbench_version,
    success_summary,
    write_config,
    write_curve,
    write_eval,
)

log = logging.getLogger(__name__)

LOG_EVERY = 50  # steps per metrics.csv row (metrics are averaged over those steps)
CHECKPOINT_EVERY = 500  # steps between checkpoints
# ... or seconds of training, whichever comes first, so a killed run loses at most a minute.
# A checkpoint only reads the run's state (weights, optimisers, RNG states), so when it is
# taken never changes the training trajectory: resume stays bit-exact.
CHECKPOINT_SECONDS = 60.0
DATA_SEED = 0  # datasets are fixed across run seeds: only the learner's seed varies
CURVE_POINTS = 5  # learning-curve evaluations per run (evenly spaced, the last at the final step)
# Episodes per instruction of each curve point: a prefix of the final evaluation's episodes.
# Five points cost 5 x 30 drawer_open episodes (about 10 s) against minutes of training.
CURVE_EPISODES_PER_INSTRUCTION = 10
CURVE_EPISODES_PER_INSTRUCTION_ALL = 2


def default_curve_episodes(task: str) -> int:
    return CURVE_EPISODES_PER_INSTRUCTION_ALL if task == MULTI_TASK else CURVE_EPISODES_PER_INSTRUCTION


def curve_steps(total: int, points: int) -> list[int]:
    """The steps at which the learning curve is evaluated: ``points`` evenly spaced, ending at ``total``."""
    if points <= 0 or total <= 0:
        return []
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


@dataclass
class RunSpec:
    """Everything that defines one run; ``qtbench run`` flags map one to one onto it."""

    algo: str
    task: str
    seed: int = 0
    steps: int | None = None  # None = default_steps(algo)
    profile: str = "default"
    failures: str = "bc"  # failure source of the datasets (qtbench.data.store.DatasetName)
    results_dir: Path = Path("results")
    checkpoint_dir: Path = Path("checkpoints")
    overrides: dict[str, object] = field(default_factory=dict)  # algorithm config fields
    # start from the settings `qtbench tune --freeze` chose (qtbench/tuned.json); False starts
    # from the algorithm's own defaults, its paper's recipe (the tuning search's cells do)
    tuned: bool = True
    resume: bool = False
    eval_episodes_per_instruction: int | None = None  # None = evaluate.default_episodes(task)
    device: str = "cpu"
    video: bool = False
    force: bool = False  # with resume: discard an incompatible checkpoint instead of failing
    log_every: int = LOG_EVERY
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_seconds: float = CHECKPOINT_SECONDS  # 0 = checkpoint by steps only
    progress: bool = True
    curve_points: int = CURVE_POINTS  # 0 = no learning curve
    curve_episodes_per_instruction: int | None = None  # None = default_curve_episodes(task)
    # torch intra-op threads; None keeps torch's default (one per core). 1 by default: on a
    # shared 2-core machine 2 threads measured ~12x slower per update (spinning OpenMP
    # workers compete with other processes), and a fixed count keeps CPU runs bit-exact
    # across machines with different core counts.
    threads: int | None = 1

    @property
    def total_steps(self) -> int:
        return default_steps(self.algo) if self.steps is None else int(self.steps)

    def validate(self) -> None:
        """QtbenchError naming the flag of every out-of-range setting (checked before any write)."""
        minimum = {"--steps": (self.steps, 1), "--seed": (self.seed, 0),
                   "--eval-episodes": (self.eval_episodes_per_instruction, 1),
                   "--threads": (self.threads, 1), "--checkpoint-every": (self.checkpoint_every, 1),
                   "--checkpoint-seconds": (self.checkpoint_seconds, 0), "log_every": (self.log_every, 1),
                   "--curve-points": (self.curve_points, 0)}
        problems = [f"{flag} {value} is out of range: it must be >= {low}"
                    for flag, (value, low) in minimum.items() if value is not None and not value >= low]
        if problems:
            threads = " (--threads 0 = one per core)" if any(p.startswith("--threads") for p in problems) else ""
            raise QtbenchError("; ".join(problems), f"omit the flag for its default, or give a value in range{threads}")
        if self.device == "cpu":
            return
        import torch

        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise QtbenchError(f"--device {self.device!r} is not a torch device", "use --device cpu or cuda") from err
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise QtbenchError("--device cuda requested but torch sees no CUDA device", "use --device cpu")

    def resume_command(self) -> str:
        """The `qtbench run` command that continues exactly this run from its last checkpoint."""
        # qtbench run puts runs with overrides under <dir>/ablations/<label>/ itself: pass the base
        parts = ["qtbench", "run", "--algo", self.algo, "--task", self.task, "--seed", str(self.seed),
                 "--steps", str(self.total_steps), "--profile", self.profile, "--failures", self.failures,
                 "--results-dir", str(base_root(self.results_dir, self.algo, self.overrides, self.failures)),
                 "--checkpoint-dir", str(base_root(self.checkpoint_dir, self.algo, self.overrides, self.failures))]
        for key, value in self.overrides.items():
            parts += ["--set", f"{key}={_cli_value(value)}"]
        if not self.tuned:
            parts.append("--untuned")
        optional = {"--eval-episodes": (self.eval_episodes_per_instruction, None),
                    "--checkpoint-every": (self.checkpoint_every, CHECKPOINT_EVERY),
                    "--checkpoint-seconds": (self.checkpoint_seconds, CHECKPOINT_SECONDS),
                    "--device": (self.device, "cpu"), "--threads": (self.threads or 0, 1),
                    "--curve-points": (self.curve_points, CURVE_POINTS)}
        for flag, (value, default) in optional.items():
            if value != default:
                parts += [flag, str(value)]
        if self.video:
            parts.append("--video")
        return shlex.join(parts + ["--resume"])


def _cli_value(value: object) -> str:
    """``value`` as --set writes it (the inverse of the conversion in typed_overrides)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(_cli_value(v) for v in value)
    return "none" if value is None else str(value)


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
    """The config class's defaults with ``overrides`` applied (only existing fields)."""
    return config_class(**typed_overrides(config_class, overrides))


def reference_config(algo: str, overrides: dict[str, object] | None = None, tuned: bool = True) -> AlgoConfig:
    """The algorithm's reference config, the defaults plus the settings ``qtbench tune --freeze``
    chose (qtbench.tuning; not with ``tuned=False``), with ``overrides`` applied on top."""
    from qtbench.tuning import reference_overrides

    frozen = reference_overrides(algo) if tuned else {}
    return resolve_config(algorithm_class(algo).config_class, {**frozen, **(overrides or {})})


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


def build_learner(spec: RunSpec, cls: type, config: AlgoConfig, data: Any) -> tuple[Any, Any, np.random.Generator]:
    """A run's freshly initialised algorithm, its window sampler on ``data`` and the seeded
    batch Generator (the model is built after seeding: same seed, same initial weights)."""
    from qtbench.data import WindowSampler

    sampler = WindowSampler(data, config.history, config.n_step, config.gamma, config.timeout_is_terminal)
    rng = seed_everything(spec.seed)
    return cls(data.spec_info(), config, device=spec.device), sampler, rng


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


@dataclass
class TrainOutcome:
    steps: int
    seconds: float
    metrics: MetricsLog
    curve: list[dict[str, Any]] = field(default_factory=list)


# Evaluates the current policy for the learning curve: (step, train seconds) -> curve point.
CurveEval = Callable[[int, float], dict[str, Any]]


def _isolated(fn: Callable[[], Any], device: str) -> Any:
    """``fn()`` under torch.random.fork_rng: whatever it draws, the training RNG is untouched."""
    import torch

    devices = list(range(torch.cuda.device_count())) if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        return fn()


def train(
    algorithm: Any,
    sampler: Any,
    rng: np.random.Generator,
    spec: RunSpec,
    algo_config: dict[str, Any],
    ckpt_dir: Path,
    out_dir: Path,
    state: checkpoint.TrainState | None = None,
    curve_eval: CurveEval | None = None,
    data: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Run gradient steps up to ``spec.total_steps``, starting from ``state`` if given.

    Writes metrics.csv (and curve.csv) into ``out_dir`` and checkpoints into ``ckpt_dir``
    every ``spec.checkpoint_every`` steps or ``spec.checkpoint_seconds`` of training,
    whichever comes first, on interrupt and at the end; checkpoints record ``data`` (the
    datasets trained on, ``qtbench.data.data_record``). With ``curve_eval``, the policy is
    evaluated after each step of ``curve_steps(total, spec.curve_points)``. Metrics are read
    from the device only at logs and checkpoints, so a diverged loss is caught at the next
    of those, before anything is saved.
    """
    import torch
    from tqdm import tqdm

    cfg = algorithm.config
    total = spec.total_steps
    step, offset = 0, 0.0
    metrics = MetricsLog()
    pending = _PendingMetrics()
    curve: list[dict[str, Any]] = []
    curve_at = set(curve_steps(total, spec.curve_points)) if curve_eval is not None else set()
    if state is not None:
        algorithm.load_state_dict(state.algorithm)
        rng.bit_generator.state = state.sampler_rng
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state.cuda_rng)
        step, offset = state.step, state.wall_seconds
        metrics = MetricsLog(list(state.metrics))
        pending = _PendingMetrics(state.pending, state.pending_count)
        curve = [dict(point) for point in state.curve]
    start_time = last_save = time.perf_counter()
    curve_seconds = 0.0  # spent on learning-curve evaluations in this segment (not training)

    def elapsed() -> float:
        return offset + time.perf_counter() - start_time - curve_seconds

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
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [], curve=curve,
            data=data or {},
        ))
        _with_partial_row(metrics, sums, pending.count, step, elapsed()).write(out_dir)
        if curve_at:
            write_curve(out_dir, curve)

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
                metrics.append(_row(read_finite(), pending.count, step, elapsed()))
                pending = _PendingMetrics()
            if step in curve_at:
                began = time.perf_counter()
                point = _isolated(lambda: curve_eval(step, elapsed()), spec.device)
                curve_seconds += time.perf_counter() - began
                curve.append(point)
            overdue = spec.checkpoint_seconds and time.perf_counter() - last_save >= spec.checkpoint_seconds
            if step % spec.checkpoint_every == 0 or overdue or step == total or interrupted.set:
                save()
                last_good, last_save = step, time.perf_counter()
            bar.update(1)
            if bar.n % 20 == 0 or step == total:
                rate = (step - seg_start_step) / max(time.perf_counter() - start_time, 1e-9)
                shown = {"loss": f"{metrics.rows[-1]['loss']:.4f}"} if metrics.rows else {}  # the last logged interval's
                bar.set_postfix(**shown, upd_s=f"{rate:.1f}", refresh=False)
            if interrupted.set:
                bar.close()
                log.warning("interrupted at step %d; checkpoint saved in %s\n  resume with: %s",
                            step, ckpt_dir, spec.resume_command())
                raise KeyboardInterrupt
    bar.close()
    sums = read_finite()
    if seg_start_step == total:  # nothing to train (already at the requested step): keep the csv whole
        _with_partial_row(metrics, sums, pending.count, step, elapsed()).write(out_dir)
    return TrainOutcome(step, elapsed(), _with_partial_row(metrics, sums, pending.count, step, elapsed()), curve)


class _PendingMetrics:
    """Sums of the ``update()`` metrics since the last metrics.csv row.

    Tensor metrics are summed where the model runs, so a step never waits for the device;
    ``read()`` does, once per log interval and per checkpoint. Sums are float64, added in
    step order: the same numbers as summing Python floats.
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
        return {key: float(value) for key, value in self.sums.items()}


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
def resolved_config(spec: RunSpec, algo_config: AlgoConfig, episodes: int, curve_episodes: int,
                    data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "data": data,
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
        "checkpoint_seconds": spec.checkpoint_seconds,
        "default_steps": default_steps(spec.algo),
        "threads": spec.threads,
        "curve_points": spec.curve_points,
        "curve_episodes_per_instruction": curve_episodes,
    }


def _initial_state(
    spec: RunSpec, ckpt_dir: Path, algo_config: dict[str, Any], data: dict[str, Any], config_class: type | None = None
) -> checkpoint.TrainState | None:
    """The checkpoint to continue from (only with --resume), after checking it fits
    (``checkpoint.check_compatible``)."""
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
        checkpoint.check_compatible(state, spec.algo, algo_config, path, data, config_class)
    except QtbenchError:
        if not spec.force:
            raise
        log.warning("--force: discarding incompatible checkpoint %s", path)
        return None
    if state.step > spec.total_steps:
        raise QtbenchError(
            f"the checkpoint in {ckpt_dir} is at step {state.step}, past the requested {spec.total_steps} steps",
            f"use --steps {state.step} or more, or start fresh without --resume",
        )
    log.info("resuming from %s at step %d", path, state.step)
    return state


def _remove_unstarted(out_dir: Path, created: list[Path]) -> None:
    """Remove the config.json of a run that never reached a checkpoint, and the folders it made."""
    (out_dir / CONFIG_FILE).unlink(missing_ok=True)
    for directory in created:  # deepest first
        try:
            directory.rmdir()
        except OSError:  # not empty: something else lives there
            break


def check_run(spec: RunSpec) -> AlgoConfig:
    """Every setting of ``spec`` checked (names, flags, config ranges, demo styles against the
    task), before datasets are made or anything is written; returns the resolved config."""
    check_names(spec.algo, spec.task)
    spec.validate()
    config = reference_config(spec.algo, spec.overrides, spec.tuned)
    if config.demo_styles:
        from qtbench.envs.policies import check_styles

        check_styles(config.demo_styles, spec.task)
    return config


def run_cell(spec: RunSpec) -> Path:
    """Train (checkpointing), evaluate, and write the cell's results; the datasets must exist
    (``qtbench.datasets.ensure_datasets`` makes them: callers run it first).

    Returns the results directory of the cell. Every setting is checked before anything is
    written. eval.json is written last and atomically; a stale one from an earlier run is
    removed first, so it never describes other weights. A run that fails before its first
    checkpoint removes the config.json it wrote (and the folders it created), so no cell
    holds only a config.
    """
    import torch

    from qtbench.benchmarks_md import machine_description
    from qtbench.data import TransitionData, data_record
    from qtbench.evaluate import default_episodes, evaluate_policy

    config = check_run(spec)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    cls = algorithm_class(spec.algo)
    config_dict = checkpoint.normalise_config(dataclasses.asdict(config))
    episodes = spec.eval_episodes_per_instruction or default_episodes(spec.task)
    curve_episodes = min(episodes, spec.curve_episodes_per_instruction or default_curve_episodes(spec.task))
    out_dir = cell_dir(spec.results_dir, spec.task, spec.algo, spec.seed)
    ckpt_dir = cell_dir(spec.checkpoint_dir, spec.task, spec.algo, spec.seed)

    trained_on = data_record(spec.task, spec.profile, spec.failures, config.dataset)
    state = _initial_state(spec, ckpt_dir, config_dict, trained_on, type(config))
    data = TransitionData.load(spec.task, config.dataset, successful_only=config.filtered,
                               profile=spec.profile, source=spec.failures, demo_styles=config.demo_styles)
    algorithm, sampler, rng = build_learner(spec, cls, config, data)
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVAL_FILE).unlink(missing_ok=True)
    if state is None:  # a fresh start: an earlier run's metrics and curve describe other weights
        (out_dir / METRICS_FILE).unlink(missing_ok=True)
        (out_dir / CURVE_FILE).unlink(missing_ok=True)
    write_config(out_dir, resolved_config(spec, config, episodes, curve_episodes, trained_on))

    def act(window: Any) -> np.ndarray:
        return algorithm.act(window.to_torch(spec.device))

    def curve_eval(step: int, train_seconds: float) -> dict[str, Any]:
        outcomes, seconds = evaluate_policy(act, spec.task, config.history, curve_episodes, spec.seed,
                                            target_return=config.target_return, progress=False)
        return curve_point(step, train_seconds, seconds, outcomes)

    try:
        trained = train(algorithm, sampler, rng, spec, config_dict, ckpt_dir, out_dir, state, curve_eval, trained_on)
    except BaseException:
        if not (out_dir / METRICS_FILE).exists():  # failed before its first checkpoint: leave nothing
            _remove_unstarted(out_dir, created)
        raise
    trained.metrics.write(out_dir)

    outcomes, eval_seconds = evaluate_policy(
        act, spec.task, config.history, episodes, spec.seed, target_return=config.target_return,
        video_dir=ckpt_dir / "videos" if spec.video else None, progress=spec.progress,
    )
    record = {
        "algo": spec.algo,
        "task": spec.task,
        "seed": spec.seed,
        "profile": spec.profile,
        "data": trained_on,
        "train_steps": trained.steps,
        "train_seconds": trained.seconds,
        "eval_seconds": eval_seconds,
        "machine": machine_description(),
        "qtbench_version": qtbench_version(),
        **success_summary(outcomes),
        CURVE_KEY: trained.curve,
    }
    write_eval(out_dir, record)
    return out_dir
