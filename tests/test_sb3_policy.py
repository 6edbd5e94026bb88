"""SB3 interop: SB3's evaluate_policy runs a qtbench policy and agrees with qtbench's evaluator."""

import numpy as np
import pytest
import torch

from qtbench.algorithms.base import AlgoConfig, EnvSpecInfo, Window
from qtbench.envs.instructions import VOCABULARY
from qtbench.sb3_policy import SB3Policy, flat_decoder

TASK = "drawer_open"


class ScriptedAlgorithm:
    """A scripted policy behind the Algorithm ``act`` interface (one env at a time).

    It restarts its plan whenever the window's current step is the episode's first, so it
    needs nothing but the window: exactly what a trained policy sees.
    """

    def __init__(self, env, kinds: tuple[str, ...], history: int = 2):
        from qtbench.envs.policies import make_policy

        self.config = AlgoConfig(history=history)
        self.spec = EnvSpecInfo(int(env.observation_space["state"].shape[0]), 4, len(VOCABULARY), 14, 100)
        self.make = lambda episode: make_policy(kinds[episode % len(kinds)], env, np.random.default_rng(episode))
        self.episodes = 0
        self.policy = None
        self.windows_seen: list[Window] = []

    def act(self, window: Window) -> np.ndarray:
        assert len(window.states) == 1
        self.windows_seen.append(window)
        state = np.asarray(window.states[0, -1], np.float64)
        if int(window.timesteps[0, -1]) == 0:
            text = " ".join(VOCABULARY[i] for i in np.asarray(window.instruction[0]) if i != 0)
            self.policy = self.make(self.episodes)
            self.episodes += 1
            self.policy.reset({"state": state}, {"instruction": text})
        return np.asarray(self.policy.act({"state": state}), np.float32)[None]


def _sb3_episode(policy: SB3Policy, venv, seed: int, instruction: str) -> tuple[float, int]:
    from stable_baselines3.common.evaluation import evaluate_policy

    venv.seed(seed)
    venv.set_options({"instruction": instruction})
    policy.reset()
    rewards, lengths = evaluate_policy(policy, venv, n_eval_episodes=1, return_episode_rewards=True)
    return float(rewards[0]), int(lengths[0])


@pytest.mark.parametrize("encoding", ["onehot", "tokens"])
def test_decoder_round_trips_state_and_instruction(encoding):
    from qtbench.envs.sb3 import make_sb3_env

    env = make_sb3_env(TASK, encoding=encoding)
    for seed, text in enumerate(["open the top drawer", "open the bottom drawer"]):
        obs, info = env.reset(seed=seed, options={"instruction": text})
        states, texts = flat_decoder(env)(obs[None])
        assert texts == [text] == [info["instruction"]]
        assert states.shape[1] == env.unwrapped.observation_space["state"].shape[0]
        np.testing.assert_array_equal(states[0], obs[: states.shape[1]])
    env.close()


def test_evaluate_policy_agrees_with_qtbench_evaluation_on_the_same_seeds():
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from qtbench.envs import make_env
    from qtbench.envs.sb3 import make_sb3_env
    from qtbench.evaluate import EvalJob, run_episodes

    env = make_env(TASK)
    instructions = [ins.text for ins in env.unwrapped.instructions]
    jobs = [EvalJob(instructions[i % len(instructions)], 100 + i) for i in range(6)]

    # Expert and erring collector by turns, each episode's noise from its own generator:
    # both evaluations see the same actions, and some episodes succeed while others fail.
    kinds = ("expert", "autonomous")
    ours = ScriptedAlgorithm(env, kinds)
    outcomes, _ = run_episodes(ours.act, lambda: make_env(TASK), jobs, history=2, num_envs=1, progress=False)
    theirs = ScriptedAlgorithm(env, kinds)
    venv = DummyVecEnv([lambda: Monitor(make_sb3_env(TASK))])
    policy = SB3Policy(theirs, venv)
    for job, outcome in zip(jobs, outcomes):
        reward, length = _sb3_episode(policy, venv, job.seed, job.instruction)
        assert (reward == 1.0, length) == (outcome.success, outcome.length), job
    assert {o.success for o in outcomes} == {True, False}  # the comparison covers both
    # The policy saw the same windows, step for step.
    assert len(ours.windows_seen) == len(theirs.windows_seen) == sum(o.length for o in outcomes)
    for a, b in zip(ours.windows_seen, theirs.windows_seen):
        for field in ("states", "mask", "instruction", "actions", "returns_to_go", "timesteps"):
            np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)))
    env.close()


def test_trained_algorithm_runs_under_evaluate_policy_with_two_envs():
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from qtbench.baselines.decision_transformer import DecisionTransformer, DTConfig
    from qtbench.envs.instructions import MAX_TOKENS
    from qtbench.envs.sb3 import make_sb3_env

    venv = DummyVecEnv([lambda: Monitor(make_sb3_env(TASK, encoding="tokens"))] * 2)
    state_dim = venv.observation_space.shape[0] - MAX_TOKENS
    spec = EnvSpecInfo(state_dim, 4, len(VOCABULARY), MAX_TOKENS, 200)
    torch.manual_seed(0)
    algo = DecisionTransformer(spec, DTConfig(history=3, d_model=16, n_layers=1, n_heads=1))
    policy = SB3Policy(algo, venv)
    assert policy.target_return == 1.0
    venv.seed(0)
    rewards, lengths = evaluate_policy(policy, venv, n_eval_episodes=2, return_episode_rewards=True)
    assert len(rewards) == 2 and all(n > 0 for n in lengths)
    window = policy.windows.window()
    assert window.mask.all() and (window.timesteps[:, -1] > 0).all()
