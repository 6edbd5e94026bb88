"""Demo agreement: does a run's policy move as its demonstrations do, step by step?

For the demonstrations (episodes with a positive return) of the run's own training dataset,
the run's greedy action in each demo state (with the demo's own history window, the current
action row zeroed as in acting) is compared with the demo's action: the cosine between their
motions (dx, dy, dz), and whether it exceeds AGREE_COS. Steps 0 .. FIRST_STEPS-1 of each demo
are reported one by one; the later steps together (at most LATER_PER_EPISODE per episode,
drawn with AGREEMENT_SEED).

Why by step: at step 0 every demo sets off from the gripper's start, and only the instruction
and the objects say where to; from step 1 on, the window (the gripper's displacement from its
start, the history of states) shows the motion already begun. A policy that agrees from step 1
on but not at step 0 continues motions it sees rather than choosing where to go: in closed
loop it sets off toward the wrong object and keeps going (the copycat problem of imitation
with observation histories, Wen et al. 2020). The shares' 95% intervals resample whole
episodes (``probe.episode_bootstrap``).

The gripper (action dimension 3: -1 open, 1 closed) is checked where it matters: at each
demo's closing step (the first step whose command is closed, > 0, after an open one), at its
opening step (the first open command after a closed one: the release), and at the step before
each, the share of the policy's greedy commands that close and their median. A policy that
reaches the object but never closes scores low at the closing step: on pick_place,
Q-Transformer reached the object in 91% of its episodes and never closed the fingers in 79% of
its failures. One that carries the object to the goal and holds it there scores high at the
opening step; its median command says whether it decides (near -1 or 1) or hedges between the
demos' two commands (in between: what a squared-error regression of a command the data
disagree on learns; DT on move_near, README Diagnostics).
"""

from __future__ import annotations

from typing import Any

import numpy as np

AGREEMENT_FILE = "agreement.json"
FIRST_STEPS = 4  # demo steps reported one by one
LATER_PER_EPISODE = 4  # later steps drawn per demo episode
AGREE_COS = 0.8  # cosine above which the two motions agree (about 37 degrees)
AGREEMENT_SEED = 0  # the later steps drawn and the bootstrap
BATCH_SIZE = 512
MIN_MOTION = 1e-6  # a motion shorter than this has no direction (cosine 0)
GRIPPER = 3  # action dimension of the finger command: -1 open, 1 closed (> 0 closes)


def motion_cosines(policy: np.ndarray, demo: np.ndarray) -> np.ndarray:
    """Cosine between the (dx, dy, dz) parts of two action arrays (N, A) -> (N,); 0 where
    either motion has no direction."""
    a, b = policy[:, :3].astype(np.float64), demo[:, :3].astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > MIN_MOTION**2, (a * b).sum(1) / np.maximum(norms, MIN_MOTION**2), 0.0)


def demo_rows(data: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Transition rows of the demos' first FIRST_STEPS steps and of up to LATER_PER_EPISODE
    later steps per demo, and each row's step label (its step index; FIRST_STEPS for later)."""
    demos = np.flatnonzero(data.episode_succeeded)
    order = np.argsort(data.episode_ids, kind="stable")
    starts = np.searchsorted(data.episode_ids[order], demos)
    ends = np.searchsorted(data.episode_ids[order], demos, side="right")
    rows, labels = [], []
    for start, end in zip(starts, ends):
        members = order[start:end]
        steps = data.step_indices[members]
        first, later = members[steps < FIRST_STEPS], members[steps >= FIRST_STEPS]
        if len(later) > LATER_PER_EPISODE:
            later = np.sort(rng.choice(later, LATER_PER_EPISODE, replace=False))
        rows += [first, later]
        labels += [data.step_indices[first], np.full(len(later), FIRST_STEPS)]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(labels)


# The demo steps where the finger command switches, and the steps before them, in report order.
GRIPPER_STEPS = ("closing step", "step before closing", "opening step", "step before opening")


def switch_rows(data: Any, to_closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Transition rows of each demo's first step whose finger command switches (to closed, > 0,
    after an open one when ``to_closed``; else to open after a closed one) and of the step
    before it: (switch rows, rows before), aligned; demos that never switch so have none."""
    demos = set(np.flatnonzero(data.episode_succeeded).tolist())
    order = np.lexsort((data.step_indices, data.episode_ids))
    ids, closed = data.episode_ids[order], data.actions[order, GRIPPER] > 0
    after = closed if to_closed else ~closed
    # consecutive rows of one episode where the command switches the asked way
    starts = (ids[1:] == ids[:-1]) & ~after[:-1] & after[1:]
    first = {}
    for i in np.flatnonzero(starts):
        if int(ids[i]) in demos:
            first.setdefault(int(ids[i]), i)
    at = np.array(sorted(first.values()), np.int64)
    return order[at + 1], order[at]


def gripper_rows(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """The demos' switch rows and the rows before them (``switch_rows``, closing then opening)
    and each row's index into GRIPPER_STEPS."""
    rows, labels = [], []
    for to_closed, (switch_label, before_label) in ((True, (0, 1)), (False, (2, 3))):
        switch, before = switch_rows(data, to_closed)
        rows += [switch, before]
        labels += [np.full(len(switch), switch_label), np.full(len(before), before_label)]
    return np.concatenate(rows), np.concatenate(labels)


def gripper_table(commands: np.ndarray, labels: np.ndarray, episodes: np.ndarray,
                  rng: np.random.Generator) -> list[dict[str, Any]]:
    """One row per GRIPPER_STEPS entry with rows (``labels`` index it): the share of the
    policy's finger ``commands`` there that close (> 0), with its episode-bootstrap 95%
    interval, and their median."""
    from qtbench.probe import episode_bootstrap

    table = []
    for label, name in enumerate(GRIPPER_STEPS):
        sel = labels == label
        if not sel.any():
            continue
        share = episode_bootstrap((commands[sel] > 0).astype(np.float64), episodes[sel], rng)
        table.append({"demo step": name, "transitions": int(sel.sum()), "closes": share["mean"],
                      "closes_ci95": share["ci95"], "median_command": float(np.median(commands[sel]))})
    return table


def agreement_table(cosines: np.ndarray, labels: np.ndarray, episodes: np.ndarray,
                    rng: np.random.Generator) -> list[dict[str, Any]]:
    """One row per step label: transitions, median cosine, and the share that agrees (cosine >
    AGREE_COS) with its episode-bootstrap 95% interval."""
    from qtbench.probe import episode_bootstrap

    table = []
    for label in np.unique(labels):
        sel = labels == label
        share = episode_bootstrap((cosines[sel] > AGREE_COS).astype(np.float64), episodes[sel], rng)
        table.append({"step": "later" if label >= FIRST_STEPS else int(label), "transitions": int(sel.sum()),
                      "median_cos": float(np.median(cosines[sel])), "agree": share["mean"], "agree_ci95": share["ci95"]})
    return table


def agreement_run(run: Any, progress: bool = True) -> dict[str, Any]:
    """The demo agreement of a loaded run (``qtbench.loaded_run.LoadedRun``), as agreement.json."""
    from tqdm import tqdm

    from qtbench.data import WindowSampler

    data, cfg = run.data, run.algo_config
    rng = np.random.default_rng(AGREEMENT_SEED)
    rows, labels = demo_rows(data, rng)
    switches, switch_labels = gripper_rows(data)
    motion = len(rows)
    rows = np.concatenate([rows, switches])
    sampler = WindowSampler(data, cfg.history, 1, cfg.gamma, cfg.timeout_is_terminal)
    actions = []
    with tqdm(total=len(rows), desc="agreement", unit="tr", disable=not progress, leave=False) as bar:
        for start in range(0, len(rows), BATCH_SIZE):
            window = sampler.acting_window(data.obs_rows[rows[start:start + BATCH_SIZE]])
            actions.append(np.asarray(run.act(window), np.float32))
            bar.update(len(window.states))
    policy = np.concatenate(actions) if actions else np.zeros((0, data.action_dim), np.float32)
    cosines = motion_cosines(policy[:motion], data.actions[rows[:motion]])
    episodes = data.episode_ids[rows]
    result = {"run": str(run.run_dir), "algo": run.config["algo"], "task": run.config["task"],
              "checkpoint_step": run.checkpoint_step, "demo_episodes": int(len(np.unique(episodes[:motion]))),
              "agree_cos": AGREE_COS, "steps": agreement_table(cosines, labels, episodes[:motion], rng)}
    if len(switches):
        result["gripper"] = gripper_table(policy[motion:, GRIPPER], switch_labels, episodes[motion:], rng)
    return result


def format_agreement(result: dict[str, Any]) -> str:
    """The agreement table as Markdown, with a heading naming the run."""
    from qtbench.benchmarks_md import markdown_table

    head = (f"{result['algo']} on {result['task']} (step {result['checkpoint_step']}): its greedy motion against "
            f"the demos' own, in {result['demo_episodes']} demo episodes (agrees: cosine > {result['agree_cos']})")
    body = [[str(r["step"]), str(r["transitions"]), f"{r['median_cos']:.2f}",
             f"{100 * r['agree']:.1f} [{100 * r['agree_ci95'][0]:.1f}, {100 * r['agree_ci95'][1]:.1f}]"]
            for r in result["steps"]]
    text = head + "\n\n" + markdown_table(["demo step", "transitions", "median cosine", "agrees % [95% CI]"], body)
    if result.get("gripper"):
        grip = [[r["demo step"], str(r["transitions"]),
                 f"{100 * r['closes']:.1f} [{100 * r['closes_ci95'][0]:.1f}, {100 * r['closes_ci95'][1]:.1f}]",
                 f"{r['median_command']:+.2f}"]
                for r in result["gripper"]]
        text += ("\n\nIts greedy finger command (-1 open, 1 closed) where the demos first close theirs and "
                 "first open them again, and one step before each:\n\n"
                 + markdown_table(["demo step", "transitions", "policy closes % [95% CI]", "median command"], grip))
    return text
