"""Running a grid of (algorithm, task, seed) cells, locally or on a Ray cluster (the
`qtbench sweep` command is :mod:`qtbench.cli.sweep`).

Both executors share one code path: each cell becomes a picklable :class:`CellJob`, a
worker runs it through :func:`execute` (which never raises: a failing cell is reported
and the others go on), and the driver collects :class:`CellOutcome` objects as they
finish. Finished cells (an ``eval.json`` exists) are skipped and interrupted ones resume from
their checkpoint, unless the result or checkpoint was made on other data than the datasets now
on disk, or with other settings than the cell's config now (then the cell runs again from scratch); datasets are generated once, before the
cells fan out, so no two workers race to write the same dataset.

Ablation runs get their own result paths so they never overwrite the reference run:
``<results_dir>/ablations/<label>/<task>/<algo>/seed<k>/`` where ``label`` is
:func:`run_label` (e.g. ``q_transformer+no_conservative``). Because that root is passed
as the run's ``results_dir``, the training loop's layout needs no special case.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from qtbench.algorithms import ALGORITHMS, headline_algorithms
from qtbench.envs.instructions import MULTI_TASK
from qtbench.errors import QtbenchError
from qtbench.results import EVAL_FILE, run_label, run_root
from qtbench.tuning import COMPARISON_SEEDS

log = logging.getLogger(__name__)

# The paper's ablations of Q-Transformer: variant name -> config overrides.
ABLATIONS: dict[str, dict[str, object]] = {
    "no_conservative": {"conservative": False},
    "no_mc_return": {"mc_return": False},
    "n_step3": {"n_step": 3},
}
ABLATION_ALGO = "q_transformer"
@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    algo: str
    task: str
    seed: int
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return run_label(self.algo, dict(self.overrides))

    def results_dir(self, results_dir: Path) -> Path:
        """Where this cell's config.json / metrics.csv / eval.json live."""
        root = run_root(results_dir, self.algo, dict(self.overrides))
        return root / self.task / self.algo / f"seed{self.seed}"

    def checkpoint_dir(self, checkpoint_dir: Path) -> Path:
        root = run_root(checkpoint_dir, self.algo, dict(self.overrides))
        return root / self.task / self.algo / f"seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.label}/{self.task}/seed{self.seed}"


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell (picklable, no live objects)."""

    cell: Cell
    results_dir: Path  # the base results dir of the sweep (not the cell's own dir)
    checkpoint_dir: Path
    steps: int | None = None
    profile: str = "default"
    eval_episodes_per_instruction: int | None = None
    resume: bool = False  # continue from the cell's checkpoint if it has one
    tuned: bool = True  # start from the frozen settings (RunSpec.tuned)
    torch_threads: int = 1
    show_progress: bool = False

    @property
    def cell_results_dir(self) -> Path:
        return self.cell.results_dir(self.results_dir)

    def run_spec(self):
        """The training loop's RunSpec for this cell."""
        from qtbench.train import RunSpec

        overrides = dict(self.cell.overrides)
        return RunSpec(
            algo=self.cell.algo,
            task=self.cell.task,
            seed=self.cell.seed,
            steps=self.steps,
            profile=self.profile,
            results_dir=run_root(self.results_dir, self.cell.algo, overrides),
            checkpoint_dir=run_root(self.checkpoint_dir, self.cell.algo, overrides),
            overrides=overrides,
            tuned=self.tuned,
            resume=self.resume,
            eval_episodes_per_instruction=self.eval_episodes_per_instruction,
            progress=self.show_progress,
            threads=self.torch_threads,
        )


def run_job(job: CellJob) -> Path:
    """The default cell function: train, evaluate and write results with the real loop (a
    worker on another machine makes the datasets it lacks; prepare_datasets made them here)."""
    from qtbench.datasets import ensure_datasets
    from qtbench.train import DATA_SEED, check_run, run_cell

    spec = job.run_spec()
    check_run(spec)
    ensure_datasets(spec.task, spec.profile, DATA_SEED, spec.failures, progress=spec.progress)
    return run_cell(spec)


CellFn = Callable[[CellJob], Path]


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    status: str  # "done", "skipped" or "failed"
    seconds: float = 0.0
    error: str | None = None
    success_rate: float | None = None
    traceback: str | None = None  # for unexpected exceptions (not for QtbenchError)


def _read_success(cell_dir: Path) -> float | None:
    import json

    try:
        return float(json.loads((cell_dir / EVAL_FILE).read_text())["success_rate"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _other_data(task: str, data: dict | None) -> str | None:
    """"fingerprint OLD, datasets now NEW" when the data record ``data`` (qtbench.data.store.
    data_record) names other data than the task's datasets now on disk; None when it matches or
    either side is unknown (no record, no datasets)."""
    from qtbench.data.store import data_record

    try:
        was = data["fingerprint"]
        now = data_record(task, data["profile"], data["failure_source"], "mixed")["fingerprint"]
    except (KeyError, TypeError, QtbenchError):
        return None
    return None if now == was else f"fingerprint {was[:15]}, datasets now {now[:15]}"


def _other_settings(cell: Cell, config: SweepConfig, stored: dict | None, machine: str | None) -> str | None:
    """"learning_rate 0.0003 (now 0.0001)" when the stored algorithm config ``stored``
    differs from the one the cell runs now (e.g. `qtbench tune --freeze` changed the reference
    settings since); None when it matches or nothing was stored. ``machine``: the record's
    machine line (``checkpoint.config_changes`` compares ``amp`` by the precision it ran in)."""
    import dataclasses

    from qtbench.algorithms import algorithm_class
    from qtbench.checkpoint import config_changes
    from qtbench.train import reference_config

    if not stored:
        return None
    wanted = dataclasses.asdict(reference_config(cell.algo, dict(cell.overrides), config.tuned))
    changes = config_changes(stored, wanted, algorithm_class(cell.algo).config_class, machine)
    return ", ".join(f"{key} {have} (now {want})" for key, (have, want) in changes.items()) or None


def _stale(cell: Cell, config: SweepConfig, data: dict | None, stored: dict | None,
           machine: str | None = None) -> str | None:
    """"on other data (...)" or "with other settings (...)", or None when both still hold."""
    if other := _other_data(cell.task, data):
        return f"on other data ({other})"
    if other := _other_settings(cell, config, stored, machine):
        return f"with other settings ({other})"
    return None


def why_stale(cell: Cell, config: SweepConfig) -> str | None:
    """Why a cell's finished result or its checkpoint no longer counts: it was made on other data
    than the datasets now on disk (they were regenerated since) or with other settings than the
    cell runs now (a frozen tuning changed the defaults since), so the cell runs again from
    scratch; None when there is nothing to discard."""
    import json

    from qtbench import checkpoint
    from qtbench.results import CONFIG_FILE

    def read(name: str, key: str) -> dict | str | None:
        try:
            return json.loads((cell_dir / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    cell_dir = cell.results_dir(config.results_dir)
    if (cell_dir / EVAL_FILE).is_file():
        data, stored, machine = read(EVAL_FILE, "data"), read(CONFIG_FILE, "algo_config"), read(EVAL_FILE, "machine")
        stale = _stale(cell, config, data, stored, machine if isinstance(machine, str) else None)
        return f"finished {stale}" if stale else None
    try:
        state = checkpoint.load(cell.checkpoint_dir(config.checkpoint_dir))
    except QtbenchError:  # unreadable: the run reports it with its fix
        return None
    stale = _stale(cell, config, state.data, state.algo_config) if state else None
    return f"its checkpoint was made {stale}" if stale else None


def execute(job: CellJob, cell_fn: CellFn = run_job) -> CellOutcome:
    """Run one cell inside a worker; every exception becomes a "failed" outcome."""
    from qtbench.threads import torch_threads

    # Per-cell settings, restored afterwards so an in-process caller is left as it was.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "0" if job.show_progress else "1"  # also silences dataset bars
    start = time.perf_counter()
    try:
        with torch_threads(job.torch_threads):
            cell_dir = Path(cell_fn(job))
    except Exception as err:  # reported in the outcome; the sweep goes on (Ctrl-C still stops it)
        message = f"{type(err).__name__}: {err}"
        trace = None if isinstance(err, QtbenchError) else traceback.format_exc()
        return CellOutcome(job.cell, "failed", time.perf_counter() - start, error=message, traceback=trace)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    return CellOutcome(job.cell, "done", time.perf_counter() - start, success_rate=_read_success(cell_dir))


# Seconds between "still running" ticks, so the progress bar's clock moves during long cells.
HEARTBEAT_SECONDS = 10.0


class Executor(Protocol):
    """Runs jobs and yields their outcomes as they finish (in any order), or None as a
    heartbeat while cells are still running."""

    def run(self, jobs: list[CellJob], cell_fn: CellFn) -> Iterator[CellOutcome | None]: ...


CELL_MEMORY_GIB = 2.0  # memory set aside per concurrent cell (a move_near cell peaks at 0.85 GiB)


def default_workers() -> int:
    """Concurrent cells when --workers is not given: one per CPU core this process may use (a
    cell trains on one torch thread), at most one per CELL_MEMORY_GIB of physical memory. A
    cell's result does not depend on it (each runs in a fresh process on its own seeds)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):  # not a POSIX system: cores alone
        return cores
    return max(1, min(cores, int(memory_gib // CELL_MEMORY_GIB)))


@dataclass
class LocalExecutor:
    """A process pool on this machine (``spawn``: safe with torch's thread pools), one fresh
    process per cell: a cell runs the code on disk when it starts, never modules a worker
    imported for an earlier cell (a long sweep across a code change would mix versions)."""

    workers: int = 1
    mp_context: str = "spawn"

    def run(self, jobs: list[CellJob], cell_fn: CellFn) -> Iterator[CellOutcome | None]:
        import multiprocessing

        ctx = multiprocessing.get_context(self.mp_context)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, max_tasks_per_child=1) as pool:
            pending = {pool.submit(execute, job, cell_fn): job for job in jobs}
            try:
                while pending:
                    done, _ = wait(pending, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
                    if not done:
                        yield None
                    for future in done:
                        job = pending.pop(future)
                        try:
                            yield future.result()
                        except Exception as err:  # a worker process died (e.g. out of memory)
                            yield CellOutcome(job.cell, "failed", error=f"worker crashed: {type(err).__name__}: {err}")
            except KeyboardInterrupt:
                _stop_workers(pool)
                raise


def _stop_workers(pool: ProcessPoolExecutor, grace_seconds: float = 60.0) -> None:
    """Start no further cell and send each worker SIGTERM, which a training worker turns into
    "checkpoint, then stop". Ctrl-C reaches the workers through the terminal, but a SIGTERM
    sent to the sweep alone would otherwise leave them running as orphans."""
    processes = list((pool._processes or {}).values())  # the pool has no public handle on them
    # With max_tasks_per_child, CPython before 3.14 tries to replace a worker that exits after
    # shutdown(wait=False), and the pool's manager thread dies on its cleared process table
    # (gh-119592). Its death is what lets the pool close; keep only its traceback off the screen.
    manager, report = pool._executor_manager_thread, threading.excepthook
    threading.excepthook = lambda args: None if args.thread is manager else report(args)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(grace_seconds)
        if process.is_alive():
            process.kill()


@dataclass
class RayExecutor:
    """Each cell a Ray task on a cluster (``address``) or on a Ray instance started here.

    Connects with ``ray.init(address=...)`` unless Ray is already initialised (then the
    caller's instance is used and left running). Every node needs qtbench installed and
    the datasets reachable (a shared ``MINARI_DATASETS_PATH``, or each cell generates them).
    """

    address: str | None = None
    cpus_per_task: float = 1.0

    def run(self, jobs: list[CellJob], cell_fn: CellFn) -> Iterator[CellOutcome | None]:
        try:
            import ray
        except ImportError as err:
            raise QtbenchError(
                "the ray executor needs the `ray` package, which is not installed",
                "pip install 'qtbench[distributed]'  (or: pip install 'ray>=2.9')",
            ) from err
        started = False
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"include_dashboard": False}
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError) as err:
                raise QtbenchError(
                    f"cannot connect to the Ray cluster at {self.address or 'a new local instance'}: {err}",
                    "check the address (`ray status` on the head node; `--address auto` finds a local "
                    "cluster); a cluster with token authentication also needs RAY_AUTH_MODE=token and "
                    "its token (~/.ray/auth_token or RAY_AUTH_TOKEN)",
                ) from err
            started = True
        try:
            remote = ray.remote(num_cpus=self.cpus_per_task)(execute)
            pending = {remote.remote(job, cell_fn): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=HEARTBEAT_SECONDS)
                if not done:
                    yield None
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        yield ray.get(ref)
                    except Exception as err:  # the task's worker died
                        yield CellOutcome(job.cell, "failed", error=f"ray task failed: {type(err).__name__}: {err}")
        finally:
            if started:
                ray.shutdown()


def prepare_datasets(tasks: Iterable[str], profile: str, workers: int) -> None:
    """Generate (or verify) each task's datasets once, before any cell starts."""
    from qtbench.datasets import ensure_datasets
    from qtbench.train import DATA_SEED

    for task in tasks:
        ensure_datasets(task, profile=profile, seed=DATA_SEED, workers=workers)


@dataclass
class SweepConfig:
    algos: list[str] = field(default_factory=headline_algorithms)
    tasks: list[str] = field(default_factory=lambda: [MULTI_TASK])
    seeds: list[int] = field(default_factory=lambda: list(COMPARISON_SEEDS))
    ablations: bool = False  # also run the paper's Q-Transformer ablations (ABLATIONS)
    # Config overrides to run for every algorithm instead of its reference settings (a
    # search, see qtbench.tuning); empty = the reference settings (plus ablations).
    settings: list[dict[str, object]] = field(default_factory=list)
    tuned: bool = True  # cells start from the settings `qtbench tune --freeze` chose (False: a search)
    steps: int | None = None
    profile: str = "default"
    results_dir: Path = Path("results")
    checkpoint_dir: Path = Path("checkpoints")
    eval_episodes_per_instruction: int | None = None
    force: bool = False
    workers: int = 1  # concurrent cells (local executor) / dataset generation workers


def plan(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, in a stable order (task, algo, variant, seed)."""
    cells = []
    for task in config.tasks:
        for algo in config.algos:
            variants: list[dict[str, object]] = list(config.settings) or [{}]
            if config.ablations and algo == ABLATION_ALGO:
                variants += list(ABLATIONS.values())
            for overrides in variants:
                for seed in config.seeds:
                    cells.append(Cell(algo, task, seed, tuple(sorted(overrides.items()))))
    return cells


def make_jobs(config: SweepConfig, torch_threads: int, show_progress: bool) -> tuple[list[CellJob], list[CellOutcome]]:
    """Jobs for the cells still to run, and "skipped" outcomes for finished ones."""
    jobs, skipped = [], []
    for cell in plan(config):
        cell_dir = cell.results_dir(config.results_dir)
        stale = None if config.force else why_stale(cell, config)
        if not config.force and (cell_dir / EVAL_FILE).is_file() and not stale:
            skipped.append(CellOutcome(cell, "skipped", success_rate=_read_success(cell_dir)))
            continue
        if stale:
            log.warning("%s %s: running it again from scratch", cell, stale)
        jobs.append(
            CellJob(
                cell=cell,
                results_dir=Path(config.results_dir),
                checkpoint_dir=Path(config.checkpoint_dir),
                steps=config.steps,
                profile=config.profile,
                eval_episodes_per_instruction=config.eval_episodes_per_instruction,
                resume=not (config.force or stale),  # continues from a checkpoint when there is one
                tuned=config.tuned,
                torch_threads=torch_threads,
                show_progress=show_progress,
            )
        )
    return jobs, skipped


def run_sweep(
    config: SweepConfig,
    executor: Executor,
    cell_fn: CellFn = run_job,
    prepare: Callable[[list[str], str, int], None] = prepare_datasets,
    torch_threads: int = 1,
    show_progress: bool = False,
) -> list[CellOutcome]:
    """Run every unfinished cell; returns one outcome per cell of the grid, in plan order."""
    from tqdm import tqdm

    jobs, skipped = make_jobs(config, torch_threads, show_progress)
    outcomes = {o.cell: o for o in skipped}
    total = len(jobs) + len(skipped)
    if jobs:
        tasks = list(dict.fromkeys(job.cell.task for job in jobs))
        log.info("preparing datasets for %s (profile %s)", ", ".join(tasks), config.profile)
        prepare(tasks, config.profile, config.workers)
    with tqdm(total=total, initial=len(skipped), desc="sweep", unit="cell") as bar:
        failed = 0
        for outcome in executor.run(jobs, cell_fn):
            if outcome is None:  # heartbeat: cells still running
                bar.refresh()
                continue
            outcomes[outcome.cell] = outcome
            failed += outcome.status == "failed"
            note = f"{outcome.success_rate:.3f}" if outcome.success_rate is not None else outcome.error
            bar.write(f"{outcome.cell}: {outcome.status} in {outcome.seconds:.0f} s ({note})")
            bar.set_postfix(failed=failed)
            bar.update(1)
    return [outcomes[cell] for cell in plan(config)]


def plan_status(config: SweepConfig) -> list[tuple[Cell, str]]:
    """What a sweep would do with each cell: skip it, resume it from its checkpoint, or run it."""
    from qtbench.checkpoint import checkpoint_path

    out = []
    for cell in plan(config):
        stale = None if config.force else why_stale(cell, config)
        if config.force:
            state = "run from scratch (--force)"
        elif stale:
            state = f"run from scratch: {stale}"
        elif (cell.results_dir(config.results_dir) / EVAL_FILE).is_file():
            state = "finished: skip"
        elif checkpoint_path(cell.checkpoint_dir(config.checkpoint_dir)).is_file():
            state = "resume from checkpoint"
        else:
            state = "run"
        out.append((cell, state))
    return out


def validate(config: SweepConfig) -> None:
    from qtbench.errors import unknown_name

    if config.workers < 1:
        raise QtbenchError(f"--workers must be at least 1, got {config.workers}")
    for algo in config.algos:
        if algo not in ALGORITHMS:
            raise unknown_name("algorithm", algo, list(ALGORITHMS))
    try:
        from qtbench.envs import TASKS
    except ImportError:
        return
    for task in config.tasks:
        if task not in TASKS:
            raise unknown_name("task", task, list(TASKS))
    for cell in plan(config):  # --steps, --seeds, --eval-episodes: the checks `qtbench run` makes
        CellJob(cell, config.results_dir, config.checkpoint_dir, config.steps, config.profile,
                config.eval_episodes_per_instruction).run_spec().validate()
