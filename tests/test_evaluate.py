"""Batched evaluation: job order, slot reuse, pinned instructions and seeds, batched act,
per-episode outcomes and frames (with a tiny in-file environment)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qtbench.envs import layout
from qtbench.envs.instructions import TEXT_CHARSET, TEXT_MAX_LENGTH
from qtbench.envs.skill import GRASP_OPENING
from qtbench.evaluate import EvalJob, eval_jobs, run_episodes, save_gif


class LineEnv(gym.Env):
    """A point on a line starts at seed % 3 and must reach x >= 3 within 5 steps; the
    policy's first action component moves it. Skill comes from the instruction."""

    def __init__(self, log: list):
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(-10, 10, (2,), np.float32),
            "instruction": gym.spaces.Text(TEXT_MAX_LENGTH, charset=TEXT_CHARSET),
        })
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)
        self.log = log

    def _obs(self):
        return {"state": np.array([self.x, self.t], np.float32), "instruction": self.text}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.text, self.x, self.t = options["instruction"], float(seed % 3), 0
        self.log.append((seed, self.text))
        return self._obs(), {}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        success = self.x >= 3
        info = {"success": success, "instruction": self.text,
                "skill": "drawer_open" if self.text.startswith("open") else "drawer_close"}
        return self._obs(), float(success), success, self.t >= 5 and not success, info

    def render(self):
        return np.full((4, 4, 3), 40 * self.t, np.uint8)


def forward_if_open(window) -> np.ndarray:
    """Moves +1 per step for 'open ...' instructions (token of 'open' differs), else stays."""
    from qtbench.envs.instructions import WORD_TO_ID

    go = window.instruction[:, 0] == WORD_TO_ID["open"]
    actions = np.zeros((len(go), 4), np.float32)
    actions[:, 0] = go.astype(np.float32)
    return actions


def test_eval_jobs_round_robin_over_instructions():
    jobs = eval_jobs(["a", "b"], 3, lambda n: list(range(100, 100 + n)))
    assert jobs == [EvalJob("a", 100), EvalJob("b", 101), EvalJob("a", 102),
                    EvalJob("b", 103), EvalJob("a", 104), EvalJob("b", 105)]


@pytest.mark.parametrize("num_envs", [1, 3, 16])
def test_run_episodes_outcomes_in_job_order(num_envs):
    log: list = []
    jobs = [EvalJob("open the top drawer", s) for s in (0, 1, 2)] + [EvalJob("close the top drawer", 5)]
    batch_sizes = []

    def act(window):
        batch_sizes.append(len(window.states))
        return forward_if_open(window)

    outcomes, frames = run_episodes(act, lambda: LineEnv(log), jobs, history=2, num_envs=num_envs, progress=False,
                                    track_stages=False)
    # x starts at seed % 3 and needs 3 - x steps of +1; "close" never moves and times out at 5
    assert [(o.success, o.length, o.seed) for o in outcomes] == [(True, 3, 0), (True, 2, 1), (True, 1, 2), (False, 5, 5)]
    assert [o.skill for o in outcomes] == ["drawer_open"] * 3 + ["drawer_close"]
    assert sorted(log) == sorted((j.seed, j.instruction) for j in jobs)  # each job reset exactly once
    assert max(batch_sizes) == min(num_envs, 4)  # batched: every active slot in one call
    assert frames == {}


def test_run_episodes_acts_only_on_active_slots_and_sees_history():
    seen = []

    def act(window):
        seen.append((window.mask.copy(), window.states[:, :, 1].copy()))
        return forward_if_open(window)

    jobs = [EvalJob("open the top drawer", 0), EvalJob("open the top drawer", 2)]
    run_episodes(act, lambda: LineEnv([]), jobs, history=2, num_envs=2, progress=False, track_stages=False)
    # step 0: two slots, only the current state is valid; step 1: slot 1 finished (seed 2 needs 1 step)
    assert seen[0][0].tolist() == [[False, True], [False, True]]
    assert seen[1][0].tolist() == [[True, True]] and seen[1][1].tolist() == [[0.0, 1.0]]
    assert len(seen) == 3


def test_run_episodes_records_frames_of_chosen_jobs(tmp_path):
    jobs = [EvalJob("open the top drawer", 1), EvalJob("close the top drawer", 0)]
    outcomes, frames = run_episodes(forward_if_open, lambda: LineEnv([]), jobs, history=1,
                                    record={1}, progress=False, track_stages=False)
    assert list(frames) == [1] and len(frames[1]) == 1 + outcomes[1].length  # reset frame + one per step
    path = save_gif(tmp_path / "ep.gif", frames[1])
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.n_frames == 6


def zero_policy(window) -> np.ndarray:
    return np.zeros((len(window.states), 4), np.float32)


def test_evaluate_policy_on_the_real_env_uses_eval_seeds_and_every_instruction():
    from qtbench.data import EVAL_SEED_OFFSET, eval_seeds
    from qtbench.evaluate import evaluate_policy

    outcomes, seconds = evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=2,
                                        seed=1, progress=False)
    assert [o.seed for o in outcomes] == list(eval_seeds(6, 1)) and min(o.seed for o in outcomes) >= EVAL_SEED_OFFSET
    assert [o.instruction for o in outcomes[:3]] == ["open the top drawer", "open the middle drawer",
                                                      "open the bottom drawer"]
    assert not any(o.success for o in outcomes)  # standing still never opens a drawer
    assert seconds > 0


@pytest.mark.slow
def test_evaluate_policy_saves_videos(tmp_path):
    from qtbench.evaluate import VIDEO_EPISODES, evaluate_policy

    evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=1, seed=0,
                    video_dir=tmp_path, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == VIDEO_EPISODES and names[0] == "ep00_failure_open_the_top_drawer.gif"


def test_outcomes_carry_the_furthest_stage():
    from qtbench.evaluate import evaluate_policy

    outcomes, _ = evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=1,
                                  seed=0, progress=False)
    assert [o.furthest_stage for o in outcomes] == ["none"] * 3  # standing still reaches no handle
    assert all(o.handover_step is None for o in outcomes)


def pull_policy(window) -> np.ndarray:
    """Fingers closed, pulling straight toward the robot: opens a drawer whose knob it holds."""
    actions = np.zeros((len(window.states), 4), np.float32)
    actions[:, 1], actions[:, 3] = -1.0, 1.0
    return actions


def hold_and_pull(window) -> np.ndarray:
    """Pulling straight toward the robot, the fingers kept as they are (closed on the knob, or
    open with a finger in the finger pull): opens a drawer whose handle it holds."""
    actions = pull_policy(window)
    actions[:, 3] = np.where(layout.finger_opening(window.states[:, -1]) < GRASP_OPENING, 1.0, -1.0)
    return actions


def test_handover_from_a_stage_runs_the_demo_then_the_policy():
    from qtbench.evaluate import evaluate_policy

    first_steps = []

    def pull(window):
        first_steps.append(int(window.timesteps[:, -1].min()))
        return hold_and_pull(window)

    pulled, _ = evaluate_policy(pull, "drawer_open", history=2, episodes_per_instruction=2, seed=0,
                                progress=False, handover="grasped_handle")
    idle, _ = evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=2, seed=0,
                              progress=False, handover="grasped_handle")
    steps = [o.handover_step for o in pulled]
    assert all(s is not None and s > 0 for s in steps)  # the demo grasped every handle
    assert steps == [o.handover_step for o in idle]  # the same demo prefix whatever the policy
    assert min(first_steps) == min(steps)  # the policy acts only from the hand-over on
    # holding the handle, pulling opens the drawer, unless the hard pull slips off it
    assert sum(o.success for o in pulled) >= 4 and all(o.success or o.furthest_stage == "grasped_handle" for o in pulled)
    assert not any(o.success for o in idle) and {o.furthest_stage for o in idle} <= {"grasped_handle", "pulled_half"}


def test_outcomes_say_where_the_fingers_first_closed():
    from qtbench.envs.attempts import NEVER_CLOSED, ON_NOTHING
    from qtbench.results import success_summary

    # pull_policy closes the fingers at once, at the start pose, far in front of every knob
    closed, _ = evaluate_policy_on(pull_policy)
    assert [o.first_closure for o in closed] == [ON_NOTHING] * 3
    assert all(np.linalg.norm(o.closure_offset) > 0.1 for o in closed)
    summary = success_summary(closed)["per_skill"]["drawer_open"]["first_closure"]
    assert summary["failed_episodes"] == 3 and summary["counts"][ON_NOTHING] == 3
    def open_hand(window):  # stands still with the fingers fully open
        actions = np.zeros((len(window.states), 4), np.float32)
        actions[:, 3] = -1.0
        return actions

    idle, _ = evaluate_policy_on(open_hand)
    assert [o.first_closure for o in idle] == [NEVER_CLOSED] * 3 and all(o.closure_offset is None for o in idle)
    assert [o.attempted_style for o in closed + idle] == ["none"] * 6  # never touched a knob
    handed, _ = evaluate_policy_on(pull_policy, handover="grasped_handle")  # the demo closed first
    assert all(o.first_closure is None and o.attempted_style is None for o in handed)


def test_outcomes_name_the_style_the_episode_attempted():
    """The scripted demonstrator of one style, driving evaluation: every episode is scored as
    an attempt of its style, and the summary tallies them."""
    from qtbench.envs import make_env
    from qtbench.envs.plans import STYLES
    from qtbench.envs.policies import make_policy
    from qtbench.evaluate import EvalJob, run_episodes
    from qtbench.results import success_summary

    text = "open the top drawer"
    for style in STYLES["drawer_open"]:  # the robust style, then the fragile one
        policy = make_policy("expert", make_env("drawer_open"), np.random.default_rng(0), styles=style)

        def act(window):  # one environment: row 0 is the episode's current step
            obs = {"state": window.states[0, -1], "instruction": text}
            if int(window.timesteps[0, -1]) == 0:
                policy.reset(obs, {"instruction": text})
            return policy.act(obs)[None]

        jobs = [EvalJob(text, seed) for seed in (3, 4)]
        outcomes, _ = run_episodes(act, lambda: make_env("drawer_open"), jobs, history=1, num_envs=1, progress=False)
        assert [o.attempted_style for o in outcomes] == [style, style]
        tally = success_summary(outcomes)["per_skill"]["drawer_open"]["per_attempted_style"]
        assert list(tally) == [style] and tally[style]["attempts"] == 2


def evaluate_policy_on(policy, **kwargs):
    from qtbench.evaluate import evaluate_policy

    return evaluate_policy(policy, "drawer_open", history=1, episodes_per_instruction=1, seed=0,
                           progress=False, **kwargs)


def test_handover_needs_an_intermediate_stage():
    from qtbench.errors import QtbenchError
    from qtbench.evaluate import evaluate_policy

    for stage in ("open", "lifted"):
        with pytest.raises(QtbenchError, match="reached_handle, grasped_handle, pulled_half"):
            evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=1, seed=0,
                            progress=False, handover=stage)


def test_handover_on_several_skills_keeps_the_instructions_that_have_the_stage():
    from qtbench.envs.instructions import BY_TEXT
    from qtbench.errors import QtbenchError
    from qtbench.evaluate import handover_instructions

    texts = handover_instructions("all", "grasped")
    assert len(texts) == 18 + 42 and {BY_TEXT[t].skill for t in texts} == {"pick_place", "move_near"}
    assert len(handover_instructions("all", "reached_handle")) == 3  # drawer_open's
    assert len(handover_instructions("all", "pushed_half")) == 3  # drawer_close's
    with pytest.raises(QtbenchError, match="move_near: reached_object, grasped, lifted, near_target"):
        handover_instructions("all", "placed")


def test_evaluate_policy_with_another_time_limit():
    from qtbench.evaluate import evaluate_policy

    default, _ = evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=1, seed=0,
                                 num_envs=3, progress=False)
    short, _ = evaluate_policy(zero_policy, "drawer_open", history=2, episodes_per_instruction=1, seed=0,
                               num_envs=3, progress=False, horizons={"drawer_open": 3})
    assert [o.length for o in short] == [3, 3, 3] and all(o.length > 3 for o in default)
    assert [o.seed for o in short] == [o.seed for o in default]  # the same episodes
