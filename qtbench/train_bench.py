"""`qtbench bench train`: gradient updates per second of any registered algorithm.

The number is the algorithm's own ``update()`` on one fixed synthetic batch with the
suite's shapes (state size, instruction lengths, action size; history and batch from the
algorithm's default config), so data loading is not in it; the data sampler is timed on
its own row when the dataset is present. ``--variant`` adds this checkout with config
fields changed; ``--against REF`` adds the algorithm as git ref REF has it (e.g. today's
``main``, so a speed-up is measured side by side in one run and stays reproducible),
timed in a subprocess by ``qtbench.bench_worker``; ``--rollout-episodes`` measures acting
in a batched rollout. ``--compare`` adds a public reference
implementation measured in the same process on the same threads, alternating rounds with
ours so that load from other processes hits both alike. Those harnesses import third-party
packages, so they are not in the installed package: they live in ``benchmarks/references.py``
of the source checkout (loaded by path; its docstring says how to set up the separate
virtual environment the reference packages need).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qtbench.bench_worker import time_calls
from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)

# Fallback shapes when the MuJoCo suite cannot be imported: the suite's state vector
# (qtbench.envs.layout) has 49 features, actions are [dx, dy, dz, gripper].
DEFAULT_STATE_DIM = 49
DEFAULT_ACTION_DIM = 4
DEFAULT_EPISODE_STEPS = 60


@dataclass
class Row:
    """One measured implementation."""

    name: str
    params: int
    batch: int
    updates: int
    seconds: float
    note: str = ""
    cpu_seconds: float = 0.0  # process CPU time: what other processes' load does not inflate

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds if self.seconds > 0 else 0.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="gradient updates/s of an algorithm (and of a reference implementation)")
    p.add_argument("--algo", required=True, help="registered algorithm name, e.g. q_transformer")
    p.add_argument("--task", default="drawer_open", help="task whose shapes, instructions and dataset are used")
    p.add_argument("--batch-size", type=int, default=None, help="default: the algorithm's reference batch size")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per implementation and round")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating rounds when several implementations are timed (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates before measuring")
    p.add_argument("--compare", choices=sorted(REFERENCES), default=None,
                   help="reference implementation to run side by side (benchmarks/references.py of the source checkout)")
    p.add_argument("--against", metavar="REF", default=None,
                   help="also time this algorithm as the git ref REF has it (e.g. main), with REF's default "
                        "config, in a subprocess, in alternating rounds")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="also time this checkout with these config fields set (repeatable), e.g. history=1,amp=bf16")
    p.add_argument("--rollout-episodes", type=int, default=32,
                   help="episodes of the batched greedy rollout that measures acting (0: skip; default 32)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice); 1 gives steadier numbers on a busy machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="benchmarks.md", help="file whose 'train-ALGO' section is replaced")
    p.set_defaults(func=run)


# ---- shapes and the synthetic batch ------------------------------------------------------
def suite_shapes(task: str) -> tuple[Any, list[str], str]:
    """(EnvSpecInfo, the task's instruction texts, a note on where the shapes came from)."""
    from qtbench.algorithms.base import EnvSpecInfo
    from qtbench.envs.instructions import MAX_TOKENS, MULTI_TASK, SKILLS, VOCABULARY, instructions_for
    from qtbench.errors import unknown_name

    texts = [ins.text for ins in instructions_for(task)]
    if not texts:
        raise unknown_name("task", task, [*SKILLS, MULTI_TASK])
    try:
        from qtbench.envs import make_env

        env = make_env(task)
        state_dim = int(env.observation_space["state"].shape[0])
        action_dim = int(env.action_space.shape[0])
        steps = int(env.unwrapped.max_episode_steps)
        env.close()
        note = f"shapes of the {task} env"
    except QtbenchError:
        raise
    except Exception as err:  # noqa: BLE001 - MuJoCo/gymnasium unusable here: fall back, say so
        state_dim, action_dim, steps = DEFAULT_STATE_DIM, DEFAULT_ACTION_DIM, DEFAULT_EPISODE_STEPS
        note = f"env not importable ({type(err).__name__}: {err}); default shapes"
    spec = EnvSpecInfo(state_dim, action_dim, len(VOCABULARY), MAX_TOKENS, steps)
    return spec, texts, note


def synthetic_batch(spec: Any, history: int, gamma: float, batch_size: int, texts: list[str], rng: np.random.Generator) -> Any:
    """A numpy Batch with the suite's shapes: random states/actions, real instruction tokens,
    windows padded at episode starts, ~10% terminal transitions."""
    from qtbench.algorithms.base import Batch, Window
    from qtbench.envs.instructions import tokenize_many

    def window() -> Window:
        b, h = batch_size, history
        step = rng.integers(0, spec.max_episode_steps, size=b)
        offsets = np.arange(h) - (h - 1)
        timesteps = step[:, None] + offsets[None, :]
        mask = timesteps >= 0
        return Window(
            states=rng.standard_normal((b, h, spec.state_dim)).astype(np.float32) * mask[..., None],
            mask=mask,
            instruction=tokenize_many(list(rng.choice(texts, size=b))),
            actions=rng.uniform(-1, 1, (b, h, spec.action_dim)).astype(np.float32),
            returns_to_go=rng.integers(0, 2, (b, h)).astype(np.float32),
            timesteps=np.where(mask, timesteps, 0).astype(np.int64),
        )

    terminal = rng.random(batch_size) < 0.1
    reward = (terminal & (rng.random(batch_size) < 0.5)).astype(np.float32)
    return Batch(
        window=window(), reward=reward, mc_return=rng.random(batch_size).astype(np.float32),
        nstep_return=reward, next_window=window(),
        bootstrap_discount=np.where(terminal, 0.0, gamma).astype(np.float32),
    )


# ---- timing ------------------------------------------------------------------------------
def count_params(*modules: Any) -> int:
    """Trainable parameters (target networks, frozen copies excluded), each counted once."""
    unique = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    return sum(p.numel() for p in unique.values())


# ---- reference implementations -----------------------------------------------------------
# --compare name -> the algorithm it is timed beside; the harnesses are benchmarks/references.py
REFERENCES: dict[str, str] = {"q_transformer_pypi": "q_transformer", "d3rlpy_iql": "iql"}
REFERENCES_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "references.py"


def reference_rows(name: str, spec: Any, config: Any, batch_size: int, rng: np.random.Generator,
                   ours_params: int) -> list[tuple[str, Callable[[], object], int, str]]:
    """The rows (name, one update, parameters, note) of reference ``name``, built by
    ``benchmarks/references.py`` of qtbench's source checkout (it is not installed)."""
    import importlib.util

    if not REFERENCES_FILE.exists():
        raise QtbenchError(
            f"--compare {name} needs {REFERENCES_FILE}, which is in qtbench's source checkout, not the installed package",
            "install qtbench from a git clone (pip install -e .) and run the command there",
        )
    spec_of_file = importlib.util.spec_from_file_location("qtbench_references", REFERENCES_FILE)
    module = importlib.util.module_from_spec(spec_of_file)
    spec_of_file.loader.exec_module(module)
    return module.BUILDERS[name](spec, config, batch_size, rng, ours_params)


# ---- the command -------------------------------------------------------------------------
def _sampler_row(task: str, config: Any, batch_size: int, seconds: float, rng: np.random.Generator) -> Row | str:
    """The data sampler's batches/s on the real dataset, or why the row is skipped."""
    from qtbench.data import TransitionData, WindowSampler, dataset_id

    try:
        data = TransitionData.load(task, config.dataset)
    except (QtbenchError, OSError, ValueError) as err:
        problem = err.problem if isinstance(err, QtbenchError) else str(err)
        return f"sampler row skipped: {problem} (make it with `qtbench data generate --task {task}`)"
    sampler = WindowSampler(data, config.history, config.n_step, config.gamma, config.timeout_is_terminal)
    n, elapsed, cpu = time_calls(lambda: sampler.sample(batch_size, rng), seconds)
    return Row(f"WindowSampler.sample ({dataset_id(task, config.dataset)})", 0, batch_size, n, elapsed, cpu_seconds=cpu)


def _flags(args: argparse.Namespace, batch_size: int) -> str:
    """The command line that reproduces this measurement."""
    flags = f"--algo {args.algo} --task {args.task} --batch-size {batch_size} --seconds {args.seconds:g}"
    flags += f" --threads {args.threads}" if args.threads else ""
    flags += "".join(f" --variant {v}" for v in args.variant)
    flags += f" --against {args.against}" if args.against else ""
    flags += f" --compare {args.compare}" if args.compare else ""
    flags += f" --rollout-episodes {args.rollout_episodes}" if args.rollout_episodes else ""
    return flags + (f" --rounds {args.rounds}" if args.compare or args.against or args.variant else "")


def _parse_variant(text: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in text.split(",")]
    if not all(sep and key for key, sep, _ in pairs):
        raise QtbenchError(f"--variant {text!r} is not KEY=VALUE[,KEY=VALUE]", "e.g. --variant history=1,amp=bf16")
    return {key.strip(): value.strip() for key, _, value in pairs}


class _Against:
    """The code of git ref ``ref`` (exported with ``git archive``), timed in a subprocess that
    answers ``bench_worker`` commands; the export is deleted on ``close()``."""

    def __init__(self, ref: str, init: dict[str, Any]):
        import shutil
        import subprocess

        from qtbench import bench_worker

        source = Path(bench_worker.__file__).resolve().parents[1]
        self.folder = Path(tempfile.mkdtemp(prefix="qtbench-against-"))
        try:
            rev = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", f"{ref}^{{commit}}"],
                                 capture_output=True, text=True)
            if rev.returncode != 0:
                raise QtbenchError(f"--against {ref}: not a commit of the git checkout at {source}",
                                   "name a branch, tag or commit of this repository, e.g. --against main")
            self.commit = rev.stdout.strip()
            archive = subprocess.run(["git", "-C", str(source), "archive", self.commit], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(self.folder)], input=archive.stdout, check=True)
            # -P: the worker's own folder (qtbench/, with an io.py) must not shadow the stdlib
            self.proc = subprocess.Popen([sys.executable, "-P", bench_worker.__file__, str(self.folder)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.info = self.ask({"cmd": "init", **init})
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise QtbenchError(f"the worker timing {self.commit} stopped (its error is printed above)",
                               "check that this ref has qtbench.train_bench.synthetic_batch and suite_shapes")
        return json.loads(line)

    def close(self) -> None:
        import shutil

        if getattr(self, "proc", None) is not None:
            self.proc.stdin.close()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from qtbench.algorithms import algorithm_class
    from qtbench.benchmarks_md import machine_description, markdown_table, write_section
    from qtbench.bench_worker import ROLLOUT_ENVS, build, rollout
    from qtbench.errors import QtbenchError
    from qtbench.train import typed_overrides

    cls = algorithm_class(args.algo)
    if args.compare and REFERENCES[args.compare] != args.algo:
        raise QtbenchError(
            f"--compare {args.compare} is a reference for {REFERENCES[args.compare]!r}, not {args.algo!r}",
            f"run with --algo {REFERENCES[args.compare]}",
        )
    if args.seconds <= 0 or args.rounds < 1 or args.rollout_episodes < 0:
        raise QtbenchError("--seconds must be > 0, --rounds >= 1 and --rollout-episodes >= 0",
                           "e.g. --seconds 20 --rounds 2 --rollout-episodes 32")
    if args.threads is not None:
        if args.threads < 1:
            raise QtbenchError(f"--threads must be >= 1, got {args.threads}", "e.g. --threads 1")
        torch.set_num_threads(args.threads)
    variants = [typed_overrides(cls.config_class, _parse_variant(v)) for v in args.variant]
    load_before = os.getloadavg()[0]
    ours, spec, texts, shape_note = build(args.algo, args.task, args.batch_size, args.seed, {})
    config, batch_size = ours.config, ours.config.batch_size
    rng = np.random.default_rng(args.seed)

    def local(trainee: Any) -> Callable[[float], tuple[int, float, float]]:
        for _ in range(args.warmup):
            trainee.update()
        return lambda seconds: time_calls(trainee.update, seconds)

    def describe(c: Any) -> str:
        return f"history {c.history}, amp {getattr(c, 'amp', 'none')}"

    contestants: list[tuple[Row, Callable[[float], tuple[int, float, float]]]] = [
        (Row(f"qtbench {args.algo}", count_params(*ours.modules), batch_size, 0, 0.0, describe(config)), local(ours))
    ]
    for overrides in variants:
        trainee = build(args.algo, args.task, batch_size, args.seed, overrides)[0]
        name = f"qtbench {args.algo} (" + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ")"
        contestants.append((Row(name, count_params(*trainee.modules), batch_size, 0, 0.0, describe(trainee.config)),
                            local(trainee)))
    against = None
    try:
        if args.against:
            threads = args.threads or torch.get_num_threads()
            against = _Against(args.against, dict(algo=args.algo, task=args.task, batch_size=batch_size,
                                                  seed=args.seed, threads=threads, warmup=args.warmup))
            info = against.info
            note = f"git {args.against} = {against.commit}, its default config: history {info['history']}, amp {info['amp']}"
            against_name = f"{args.against} {args.algo}"
            contestants.append((Row(against_name, info["params"], batch_size, 0, 0.0, note),
                                lambda seconds: tuple(against.ask({"cmd": "round", "seconds": seconds}).values())))
        if args.compare:
            for name, step, params, note in reference_rows(args.compare, spec, config, batch_size, rng, contestants[0][0].params):
                for _ in range(args.warmup):
                    step()
                contestants.append((Row(name, params, batch_size, 0, 0.0, note),
                                    lambda seconds, step=step: time_calls(step, seconds)))
        rounds = args.rounds if len(contestants) > 1 else 1
        bar = tqdm(total=rounds * len(contestants), unit="timing", leave=False, desc="measuring",
                   disable=rounds * len(contestants) * args.seconds < 3)
        for r in range(rounds):  # alternate, so background load falls on every contestant alike
            for row, timed in contestants:
                n, elapsed, cpu = timed(args.seconds)
                row.updates, row.seconds, row.cpu_seconds = row.updates + n, row.seconds + elapsed, row.cpu_seconds + cpu
                log.info("round %d/%d %s: %.2f updates/s", r + 1, rounds, row.name, n / elapsed)
                bar.update(1)
        bar.close()
        acting = []
        if args.rollout_episodes:
            acting.append((contestants[0][0].name, rollout(ours, args.task, texts, args.rollout_episodes, args.seed)))
            if against is not None:
                acting.append((against_name, against.ask({"cmd": "rollout", "episodes": args.rollout_episodes,
                                                          "seed": args.seed})))
    finally:
        if against is not None:
            against.close()
    rows = [row for row, _ in contestants]
    sampler = _sampler_row(args.task, config, batch_size, min(args.seconds, 5.0), rng)

    first = rows[0].updates_per_s
    table = [
        [row.name, f"{row.params:,}", row.batch, row.updates, f"{row.updates_per_s:.2f}",
         f"{row.updates_per_s * row.batch:,.0f}", f"{row.updates / row.cpu_seconds:.2f}",
         f"{first / row.updates_per_s:.2f}x" if row is not rows[0] else "1.00x"]
        for row in rows
    ]
    if isinstance(sampler, Row):
        table.append([sampler.name, "-", sampler.batch, sampler.updates, f"{sampler.updates_per_s:.1f} batches/s",
                      f"{sampler.updates_per_s * sampler.batch:,.0f}", f"{sampler.updates / sampler.cpu_seconds:.1f}", "-"])
    header = ["implementation", "parameters", "batch", "updates timed", "updates/s", "samples/s",
              "updates per CPU-second", "qtbench speed-up (wall)"]
    notes = [f"- {row.name}: {row.note}" for row in rows if row.note]
    notes.append(f"- load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    notes.append(f"- {sampler}" if isinstance(sampler, str) else "- sampler: numpy windows from the flat dataset arrays")
    notes.append(f"- GPU: {torch.cuda.get_device_name(0)}, not used (these rates are the CPU's)" if torch.cuda.is_available()
                 else "- GPU: none on this machine; `--device cuda` runs the same code but is not measured here")
    acting_lines: list[str] = []
    if acting:
        acting_table = [
            [name, ROLLOUT_ENVS, args.rollout_episodes, f"{r['env_steps']:,.0f}", f"{r['env_steps'] / r['seconds']:,.0f}",
             f"{r['env_steps'] / r['act_cpu_seconds']:,.0f}", f"{r['act_cpu_seconds'] / r['cpu_seconds']:.0%}"]
            for name, r in acting
        ]
        acting_lines = [
            "",
            f"Acting: a batched greedy rollout ({ROLLOUT_ENVS} environments stepped together, as in evaluation) "
            f"of {args.rollout_episodes} episodes on {args.task} with the untrained weights (episodes run to the time "
            "limit). 'act only' divides the env steps by the CPU time spent inside `act`.",
            "",
            markdown_table(["implementation", "envs", "episodes", "env steps", "env steps/s (wall)",
                            "env steps/s, act only (CPU)", "act share of CPU time"], acting_table),
        ]
    body = "\n".join([
        f"### Training speed: {args.algo}",
        "",
        f"Written by `qtbench bench train {_flags(args, batch_size)}`",
        "",
        f"Machine: {machine_description()}; task shapes: {shape_note} (state {spec.state_dim}, action "
        f"{spec.action_dim}); one fixed synthetic batch (seed {args.seed}), {args.warmup} warm-up updates, "
        f"{rounds} round(s) of {args.seconds:g} s per implementation, alternating. Rates are wall-clock; "
        "'per CPU-second' divides by this process's CPU time instead (with --threads 1 that is close to "
        "the rate on an idle core, whatever else the machine runs).",
        "",
        markdown_table(header, table),
        "",
        *notes,
        *acting_lines,
    ])
    print(body)
    write_section(f"train-{args.algo}", body, args.output)
    return 0
