"""Value probes: what a run's learned Q function says about the dataset it was trained on.

For every transition (s_t, a_t) of the run's own training dataset (or a uniform sample of
``max_transitions``), through the algorithm's optional ``values(window, actions)``:

* **demo vs failure actions**: mean Q(s_t, a_t) over the transitions of demonstrations
  (episodes with a positive return) and of failed episodes (return 0);
* **ranking**: for each demo transition, its *similar failure state* is the nearest
  failure-episode state of the same instruction in the instruction's normalised features
  (``relevant_features``: gripper position, finger opening, and the named drawer's travel
  and handle position or the named objects' positions, each minus the dataset mean over
  the dataset standard deviation, on the current state; Euclidean distance), kept when that
  distance is at most ``radius``. The distractor objects are left out because their random
  placement would otherwise decide which states count as similar. The
  statistic is the fraction of such pairs where Q(s_d, a_d) > Q(s_d, a_f): at the demo's
  own state (and history), the demo action against the action the failure episode took in
  the similar state (ties count one half);
* **greedy**: mean Q(s_t, pi(s_t)) of the algorithm's own greedy action, at demo and at
  failure states;
* **calibration**: predicted Q(s_t, a_t) against the discounted Monte-Carlo return of the
  transition (the run's gamma), in CALIBRATION_BINS equal-width bins of the prediction over
  [0, 1] (widened to the predictions' range where they leave it: IQL's and CQL's Q are not
  bounded), and their count-weighted mean absolute gap.
* **closing step**: at each demo's closing step (``agreement.switch_rows`` to closed: where the
  demonstrator first closes the fingers), Q of the demo action against the same action with
  the fingers commanded open (-1), and how often the demo's ranks above. For autoregressive
  Q functions (``dimension_values``), both actions' Q per decoded dimension: the gripper
  dimension's Q (at its place in ``decoding_order``, the demo's earlier dimensions fed in) is
  what greedy decoding compares when it chooses the fingers, the last one scores the whole
  action, so a gap between them shows where greedy decoding and the full-action value part.

Transitions of one episode are correlated, so every 95% interval here is a percentile
bootstrap over episodes (the demo episode, for ranking pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PROBE_FILE = "probe.json"
PROBE_PLOT = "probe.png"
# Default "similar state" radius, in dataset standard deviations over the relevant features.
DEFAULT_RADIUS = 0.5
CALIBRATION_BINS = 10
BOOTSTRAP_SAMPLES = 1000
BATCH_SIZE = 512
PROBE_SEED = 0  # transition subsample and bootstrap


# ---- statistics, as plain functions the tests check by hand -------------------------------
def relevant_features(text: str) -> np.ndarray:
    """State indices an instruction is about: gripper position and finger opening, plus the
    named drawer's travel and handle position, or the named object's (and target's) position."""
    from qtbench.envs import layout
    from qtbench.envs.instructions import BY_TEXT

    ins = BY_TEXT[text]
    f = layout.FIELDS
    index = [*range(f["gripper_pos"].start, f["gripper_pos"].start + 3), f["finger_opening"].start]
    if ins.drawer is not None:
        d = layout.DRAWER_INDEX[ins.drawer]
        index.append(f["drawer_pos"].start + d)
        index += range(f["handle_pos"].start + 3 * d, f["handle_pos"].start + 3 * d + 3)
    for obj in (ins.obj, ins.target):
        if obj is not None:
            o = layout.OBJECT_INDEX[obj]
            index += range(f["object_pos"].start + 3 * o, f["object_pos"].start + 3 * o + 3)
    return np.array(sorted(set(index)), dtype=np.int64)


def similar_pairs(states: np.ndarray, is_demo: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each demo row, the nearest failure row (Euclidean), if within ``radius``.

    states (N, F) normalised features of one instruction, is_demo (N,) bool. Returns the
    demo rows, their failure partners and the distances, for the pairs within ``radius``.
    """
    demos, fails = np.flatnonzero(is_demo), np.flatnonzero(~is_demo)
    if not len(demos) or not len(fails):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    nearest = np.empty(len(demos), np.int64)
    best = np.empty(len(demos))
    for chunk in np.array_split(np.arange(len(demos)), max(1, len(demos) // 256)):
        d = np.linalg.norm(states[demos[chunk], None, :] - states[None, fails, :], axis=-1)
        nearest[chunk], best[chunk] = d.argmin(1), d.min(1)
    keep = best <= radius
    return demos[keep], fails[nearest[keep]], best[keep]


def rank_scores(q_demo: np.ndarray, q_failure: np.ndarray) -> np.ndarray:
    """1 where the demo action's value is higher, 0.5 on a tie, 0 where it is lower."""
    return (q_demo > q_failure) + 0.5 * (q_demo == q_failure)


def calibration(predicted: np.ndarray, returns: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Per equal-width bin of ``predicted`` over [min(0, lowest), max(1, highest)]: count,
    mean prediction and mean return; and the count-weighted mean absolute gap."""
    predicted = np.asarray(predicted, np.float64)
    lo = min(0.0, float(predicted.min())) if len(predicted) else 0.0
    hi = max(1.0, float(predicted.max())) if len(predicted) else 1.0
    edges = np.linspace(lo, hi, bins + 1)
    index = np.clip(((predicted - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
    rows, gap = [], 0.0
    for b in range(bins):
        sel = index == b
        if not sel.any():
            continue
        mean_pred, mean_ret = float(predicted[sel].mean()), float(returns[sel].mean())
        rows.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(sel.sum()),
                     "mean_predicted": mean_pred, "mean_return": mean_ret})
        gap += sel.sum() * abs(mean_pred - mean_ret)
    return {"bins": rows, "mean_abs_gap": gap / max(len(predicted), 1)}


def episode_bootstrap(values: np.ndarray, episodes: np.ndarray, rng: np.random.Generator,
                      samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Any]:
    """Mean of ``values`` with a 95% percentile interval from resampling whole episodes."""
    if not len(values):
        return {"mean": None, "ci95": [None, None], "n": 0, "episodes": 0}
    ids, inverse = np.unique(episodes, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    pick = rng.integers(0, len(ids), size=(samples, len(ids)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    return {"mean": float(values.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "n": int(len(values)), "episodes": int(len(ids))}


# ---- the probe --------------------------------------------------------------------------
def _values(algorithm: Any, windows: list, actions: np.ndarray, device: str, bar: Any) -> np.ndarray:
    import torch

    out = []
    for window, rows in windows:
        a = torch.as_tensor(actions[rows], device=device)
        out.append(algorithm.values(window, a).float().cpu().numpy())
        bar.update(len(rows))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def probe_run(run: Any, radius: float | None = None, max_transitions: int | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Every probe statistic of a loaded run (``qtbench.loaded_run.LoadedRun``), as probe.json."""
    from tqdm import tqdm

    from qtbench.data import WindowSampler

    radius = DEFAULT_RADIUS if radius is None else float(radius)
    cfg, data, algorithm = run.algo_config, run.data, run.algorithm
    rng = np.random.default_rng(PROBE_SEED)
    sampler = WindowSampler(data, cfg.history, 1, cfg.gamma, cfg.timeout_is_terminal)
    rows = np.arange(data.num_transitions)
    if max_transitions is not None and max_transitions < len(rows):
        rows = np.sort(rng.choice(rows, size=max_transitions, replace=False))
    obs_rows = data.obs_rows[rows]
    episode = data.episode_ids[rows]
    is_demo = data.episode_succeeded[episode]
    spec = data.spec_info()
    norm = (data.states[obs_rows] - np.array(spec.state_mean)) / np.array(spec.state_std)
    groups = np.array(data.instructions)[episode]
    pairs = []
    for text in np.unique(groups):
        members = np.flatnonzero(groups == text)
        d, f, dist = similar_pairs(norm[np.ix_(members, relevant_features(str(text)))], is_demo[members], radius)
        pairs.append((members[d], members[f], dist))
    demo_idx, fail_idx, dist = (np.concatenate(parts) for parts in zip(*pairs))

    # Windows once, in batches, as the policy sees them when acting.
    windows = []
    for start in range(0, len(rows), BATCH_SIZE):
        batch = np.arange(start, min(start + BATCH_SIZE, len(rows)))
        windows.append((sampler.acting_window(obs_rows[batch]).to_torch(run.device), batch))
    swapped = data.actions[rows].copy()
    swapped[demo_idx] = data.actions[rows][fail_idx]
    with tqdm(total=4 * len(rows), desc="probe", unit="value", disable=not progress, leave=False) as bar:
        greedy = np.zeros((len(rows), data.action_dim), np.float32)
        for w, batch in windows:
            greedy[batch] = algorithm.act(w)
            bar.update(len(batch))
        q_data = _values(algorithm, windows, data.actions[rows], run.device, bar)
        q_greedy = _values(algorithm, windows, greedy, run.device, bar)
        q_swapped = _values(algorithm, windows, swapped, run.device, bar)
    mc = sampler.targets.mc_return[rows]
    closing = closing_step_values(algorithm, data, sampler, run.device, rng)

    def boot(values: np.ndarray, eps: np.ndarray) -> dict[str, Any]:
        return episode_bootstrap(values.astype(np.float64), eps, rng)

    return {
        "algo": run.config["algo"], "task": run.config["task"], "seed": int(run.config["seed"]),
        "checkpoint_step": run.checkpoint_step, "dataset": data.source, "gamma": cfg.gamma,
        "transitions": int(len(rows)), "transitions_in_dataset": data.num_transitions,
        "value": " ".join((algorithm.values.__doc__ or "").split()),
        "demo_actions": boot(q_data[is_demo], episode[is_demo]),
        "failure_actions": boot(q_data[~is_demo], episode[~is_demo]),
        "greedy_at_demo_states": boot(q_greedy[is_demo], episode[is_demo]),
        "greedy_at_failure_states": boot(q_greedy[~is_demo], episode[~is_demo]),
        "ranking": {
            "fraction_demo_above": boot(rank_scores(q_data[demo_idx], q_swapped[demo_idx]), episode[demo_idx]),
            "pairs": int(len(demo_idx)),
            "demo_transitions": int(is_demo.sum()),
            "radius": radius,
            "median_distance": float(np.median(dist)) if len(dist) else None,
            "similar": "nearest failure state of the same instruction in the instruction's normalised "
                       "features (gripper, fingers, named drawer / objects), within radius",
        },
        "calibration": calibration(q_data, mc),
        "closing_step": closing,
    }


def closing_step_values(algorithm: Any, data: Any, sampler: Any, device: str,
                        rng: np.random.Generator) -> dict[str, Any] | None:
    """The probe's closing-step statistics (module doc), or None when no demo closes the fingers."""
    import torch

    from qtbench.agreement import GRIPPER, switch_rows

    rows, _ = switch_rows(data, to_closed=True)
    if not len(rows):
        return None
    demo = data.actions[rows]
    opened = demo.copy()
    opened[:, GRIPPER] = -1.0
    episodes = data.episode_ids[rows]
    per_action: dict[str, list[np.ndarray]] = {"demo": [], "fingers_open": []}
    score = getattr(algorithm, "dimension_values", None)
    for start in range(0, len(rows), BATCH_SIZE):
        window = sampler.acting_window(data.obs_rows[rows[start:start + BATCH_SIZE]]).to_torch(device)
        for name, actions in (("demo", demo), ("fingers_open", opened)):
            a = torch.as_tensor(actions[start:start + BATCH_SIZE], device=device)
            q = score(window, a) if score is not None else algorithm.values(window, a)[:, None]
            per_action[name].append(q.float().cpu().numpy())
    q_demo, q_open = (np.concatenate(per_action[n]) for n in ("demo", "fingers_open"))

    def boot(values: np.ndarray) -> dict[str, Any]:
        return episode_bootstrap(values.astype(np.float64), episodes, rng)

    out = {"transitions": int(len(rows)), "demo": boot(q_demo[:, -1]), "fingers_open": boot(q_open[:, -1]),
           "fraction_demo_above": boot(rank_scores(q_demo[:, -1], q_open[:, -1]))}
    if score is not None:
        gripper = list(algorithm.decoding_order).index(GRIPPER)
        out["by_dimension"] = {"demo": q_demo.mean(0).tolist(), "fingers_open": q_open.mean(0).tolist(),
                               "gripper_position": gripper,
                               "gripper_dimension_demo_above": boot(rank_scores(q_demo[:, gripper], q_open[:, gripper]))}
    return out


def _fmt(stat: dict[str, Any], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "– (no transitions)"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={stat['n']}, {stat['episodes']} episodes)"


def format_probe(result: dict[str, Any]) -> str:
    """A short text report of probe.json (means with 95% episode-bootstrap intervals)."""
    rank = result["ranking"]
    return "\n".join([
        f"{result['algo']} on {result['task']} (seed {result['seed']}, step {result['checkpoint_step']}), "
        f"{result['transitions']} transitions of {result['dataset']}; value = {result['value']}",
        f"  Q of demo actions:            {_fmt(result['demo_actions'])}",
        f"  Q of failure actions:         {_fmt(result['failure_actions'])}",
        f"  Q of greedy action, demo states:    {_fmt(result['greedy_at_demo_states'])}",
        f"  Q of greedy action, failure states: {_fmt(result['greedy_at_failure_states'])}",
        f"  demo action ranked above a similar state's failure action: {_fmt(rank['fraction_demo_above'])}; "
        f"{rank['pairs']} of {rank['demo_transitions']} demo transitions had a failure state within "
        f"radius {rank['radius']}",
        f"  calibration against the Monte-Carlo return: mean |predicted - return| per bin, weighted "
        f"= {result['calibration']['mean_abs_gap']:.3f}",
        *closing_lines(result.get("closing_step")),
    ])


def closing_lines(closing: dict[str, Any] | None) -> list[str]:
    """The closing-step part of format_probe (none when no demo closes the fingers)."""
    if not closing:
        return []
    lines = [f"  at the demos' closing steps ({closing['transitions']}): Q of the demo action {_fmt(closing['demo'])}, "
             f"with the fingers open {_fmt(closing['fingers_open'])}; demo ranked above: "
             f"{_fmt(closing['fraction_demo_above'], 2)}"]
    dims = closing.get("by_dimension")
    if dims:
        def chain(values: list[float]) -> str:
            return " -> ".join(f"{v:.3f}" for v in values)
        lines.append(f"    Q per decoded dimension (first -> last), demo action: {chain(dims['demo'])}; fingers open: "
                     f"{chain(dims['fingers_open'])}; the gripper dimension (position {dims['gripper_position'] + 1} "
                     f"of {len(dims['demo'])} in decoding order) ranks the demo above: {_fmt(dims['gripper_dimension_demo_above'], 2)}")
    return lines


def probe_plot(result: dict[str, Any], path: Path) -> Path:
    """Left: mean Q of demo, failure and greedy actions with intervals; right: calibration."""
    from qtbench.plots import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    names = ["demo_actions", "failure_actions", "greedy_at_demo_states", "greedy_at_failure_states"]
    labels = ["demo\nactions", "failure\nactions", "greedy at\ndemo states", "greedy at\nfailure states"]
    stats = [result[n] for n in names]
    shown = [(i, s) for i, s in enumerate(stats) if s["mean"] is not None]
    left.bar([i for i, _ in shown], [s["mean"] for _, s in shown],
             yerr=[[s["mean"] - s["ci95"][0] for _, s in shown], [s["ci95"][1] - s["mean"] for _, s in shown]],
             capsize=3, color=["tab:green", "tab:red", "tab:blue", "tab:purple"][: len(shown)])
    left.set_xticks(range(len(labels)), labels, fontsize="small")
    left.set_ylabel("learned Q (mean, 95% CI)")
    ranked = result["ranking"]["fraction_demo_above"]["mean"]
    ranking = "no similar pairs" if ranked is None else f"demo > failure action in similar states: {100 * ranked:.0f}%"
    left.set_title(f"{result['algo']} on {result['task']}: values\n({ranking})", fontsize="small")
    bins = result["calibration"]["bins"]
    span = [min(0.0, bins[0]["bin"][0]), max(1.0, bins[-1]["bin"][1])] if bins else [0.0, 1.0]
    right.plot(span, span, color="grey", linewidth=1, linestyle="--")
    right.plot([b["mean_predicted"] for b in bins], [b["mean_return"] for b in bins], marker="o")
    right.set_xlabel("predicted Q (bin mean)")
    right.set_ylabel("Monte-Carlo return (bin mean)")
    right.set_title("calibration on the training data", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
