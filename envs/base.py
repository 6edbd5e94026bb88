"""ManipulationEnv: the one Gymnasium env class behind every qtbench task id.

In the style of Gymnasium's MuJoCo v5 envs: the class docstring describes the env (actions,
observations, rewards, start, end, arguments, versions), every tunable is a constructor
argument and all randomness comes from ``self.np_random``. The gripper's mocap target moves by at most
``max_displacement`` per control step; the physics advances ``frame_skip`` substeps per step
with a single ``mj_step(..., nstep=frame_skip)`` call.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from qtbench.envs import drawer_close, drawer_open, move_near, pick_place
from qtbench.envs.instructions import MULTI_TASK, TEXT_CHARSET, TEXT_MAX_LENGTH, Instruction, instructions_for
from qtbench.envs.scene import FINGER_TRAVEL, HOME, WORKSPACE_HIGH, WORKSPACE_LOW, Scene
from qtbench.envs.skill import Skill

logger = logging.getLogger(__name__)

# skill name -> its Skill (stages, success test, horizon); instructions.SKILLS lists the names alone
SKILLS_BY_NAME: dict[str, Skill] = {
    m.SKILL.name: m.SKILL for m in (drawer_open, drawer_close, pick_place, move_near)
}
OBS_MODES = ("state", "pixels")


class ManipulationEnv(gym.Env):
    """Language-conditioned manipulation: one instruction per episode, sparse success reward.

    ## Description

    A parallel-jaw gripper, driven through a mocap body, works at a counter beside a
    cabinet with three drawers (top, middle, bottom) and eight objects (red can, green
    apple, orange, blue chip bag, brown rxbar, purple eggplant, white cup, yellow sponge).
    Each drawer has two handles: a knob in the middle of its front, and 12 cm to its right a
    finger pull (a groove behind an 8 mm lip) that one finger of the open hand can hook.
    Each episode draws one natural-language instruction of the task's skill family, the
    setting of Q-Transformer (Chebotar et al. 2023): open or close a drawer, pick an object
    from a drawer and place it on the counter (or the reverse), or move one object near
    another. The ids, one per task, are:

    | id | task | instructions | horizon (steps) |
    |---|---|---|---|
    | qtbench/DrawerOpen-v2 | drawer_open | 3 | 40 |
    | qtbench/DrawerClose-v2 | drawer_close | 3 | 40 |
    | qtbench/PickPlace-v2 | pick_place | 18 | 60 |
    | qtbench/MoveNear-v2 | move_near | 42 | 50 |
    | qtbench/AllTasks-v2 | all | 66 | the instruction's skill's |

    Without ``import qtbench``, make them as ``gym.make("qtbench:qtbench/DrawerOpen-v2")``:
    the ``qtbench:`` prefix makes Gymnasium import qtbench, which registers the ids.

    ## Action Space

    ``Box(-1, 1, (4,), float32)``; one control step lasts ``frame_skip * timestep`` (0.1 s).

    | Num | Action | Min | Max | Effect |
    |---|---|---|---|---|
    | 0 | dx | -1 | 1 | moves the gripper target by dx * max_displacement (m) along x |
    | 1 | dy | -1 | 1 | the same along y (toward the cabinet) |
    | 2 | dz | -1 | 1 | the same along z (up) |
    | 3 | gripper | -1 | 1 | finger position command: -1 fully open, 1 fully closed |

    The target is clipped to the gripper workspace and to 1.5 steps ahead of the hand (no
    wind-up); actions outside [-1, 1] are clipped, NaN or infinite ones raise ValueError.

    ## Observation Space

    ``Dict(state=Box((49,), float32), instruction=Text)``, plus ``image`` (uint8,
    ``image_size + (3,)``, from ``camera``) with ``obs_mode="pixels"``. ``instruction`` is
    the episode's instruction, lower-case words (at most 96 characters). ``state`` is laid
    out by ``qtbench.envs.layout`` (read fields by name through it, never by index):

    | Index | Field | Shape | Holds |
    |---|---|---|---|
    | 0:3 | gripper_pos | (3,) | point between the fingertips, world frame (m) |
    | 3:4 | finger_opening | (1,) | gap between the finger pads (m): ~0.098 open, ~0 closed |
    | 4:7 | drawer_pos | (3,) | slide joint of the top, middle, bottom drawer (m, 0 = closed) |
    | 7:16 | handle_pos | (3, 3) | world position of each drawer's knob, same drawer order (m) |
    | 16:40 | object_pos | (8, 3) | world position of each object (m): red can, green apple, orange, blue chip bag, brown rxbar, purple eggplant, white cup, yellow sponge |
    | 40:49 | named_pos | (3, 3) | world position of what the instruction names, in the order obj, target, drawer: the object it moves, the object to move it near (move_near), the knob of the drawer it names; zeros for what it does not name (m) |

    ``named_pos`` repeats the positions of what the instruction names (its object, the
    object to move it near, its drawer's knob), so that a learner reads where the instruction
    points instead of having to learn which of eight objects its words mean: from this suite's
    datasets (50 demos per instruction) the baselines did not learn that (every one scored
    near 0% on move_near; BC, same data and budget: 1.2% without these positions, 72.4%
    with a model-side prototype of them, 420 episodes; on v1 the BC collection policy
    succeeds in 71.6% of its move_near attempts),
    and every comparison of pick_place and move_near measured that failure instead of the
    learning rule. The suite tests learning from demos and failures, not grounding words in
    a scene (the paper's robots ground them in camera images with far more data).

    The state's bounds come from the scene (``Scene.state_bounds``): positions lie above the
    floor, inside its extent and at most 1 m high; joints within their ranges widened by one
    travel each side (MuJoCo's limits are soft). Expert and random-action episodes stay
    inside (none of 190 of each left them); a contact glitch can still fling a squeezed
    object out of the scene (1 of 190 demonstrator and 3 of 190 autonomous episodes).

    ## Rewards

    Sparse: 1.0 on the step at which the instruction becomes true, 0.0 on every other step.

    ## Starting State

    The gripper starts open at (0, -0.25, 0.42) m plus uniform noise of +-``reset_noise``
    per axis. Then the instruction's skill sets the scene from ``np_random`` only:
    drawer_open closes every drawer (at most 1 cm open); drawer_close opens the named one;
    pick_place opens the named drawer, with the object inside ("from") or on the counter
    ("into"); move_near closes the drawers and puts its two objects at least 20 cm apart.
    Objects not inside a drawer rest on the counter, at least 10 cm apart. ``reset(options={"instruction": text})`` picks the instruction;
    without it one is drawn uniformly from the task's instructions.

    ## Episode End

    - Termination: the instruction holds (the step whose reward is 1.0); ``info["success"]``
      is then True.
    - Truncation: the skill's horizon is reached (see the table above), or the simulation
      diverged and MuJoCo reset it (``info["physics_unstable"]``); a failed attempt.

    ``info`` always holds ``success``, ``instruction`` and ``skill``. No TimeLimit wrapper
    is added: the env truncates itself.

    ## Arguments

    | Argument | Default | Meaning |
    |---|---|---|
    | task | "all" | a skill (drawer_open, drawer_close, pick_place, move_near) or "all" |
    | obs_mode | "state" | "state", or "pixels" to add ``image`` |
    | render_mode | None | None or "rgb_array" (``render()`` returns render_size frames) |
    | frame_skip | 20 | physics substeps per control step |
    | timestep | 0.005 | physics substep length (s) |
    | max_displacement | 0.05 | how far (m) the gripper target moves per step at abs(action) = 1 |
    | horizons | None | per-skill step limits overriding the skills' defaults, e.g. {"pick_place": 80} |
    | reset_noise | 0.03 | half-width (m) of the uniform noise on the gripper's start position |
    | image_size | (96, 96) | height, width of ``image`` |
    | render_size | (360, 480) | height, width of ``render()`` frames |
    | camera | "front" | the camera of ``image`` and ``render()``: "front", "corner" or "top" |
    | sleep | True | let resting bodies sleep (MuJoCo's sleeping; ~3x faster; see set_physics_state) |

    ## Version History

    - v0: the suite as released. Changes since, none of which alters an episode that ran
      without a physics glitch: a diverged simulation ends the episode as a truncation
      (``physics_unstable``) instead of continuing from MuJoCo's reset pose; the state Box
      has finite bounds derived from the scene instead of (-inf, inf). One change does
      alter episodes: the drawers' slide damping went from 4 to 1, so that a firm grasp of the
      knob pulls a drawer without the pads sliding off it (the demonstrator styles rely on
      it); episodes that move a drawer differ from those recorded before, so datasets
      generated before it should be regenerated. So does the second handle: every drawer
      front gained the finger pull beside its knob (the fragile style of drawer_open, a hook,
      replaced a fingertip pinch of the knob); datasets generated before it should be
      regenerated (their manifests record the code version that made them).
    - v1: the state gained ``named_pos`` (40 -> 49 floats: the positions of what the
      instruction names). Episodes are those of v0 with the longer state; datasets of v0 must
      be regenerated.
    - v2: the styles were made to differ in the precision they need, under a learned policy's
      errors (centimetres), not only the scripted demonstrator's (millimetres): the knob is 5 cm
      wide instead of 2.4 (a grasp holds 3 cm to either side, where it held 1.1 cm) and the
      finger pull 1.4 cm long instead of 3 (a hook holds 1 cm to a side, where it held 2 cm);
      pick_place's and move_near's fragile style grasps the object's near end instead of high
      on its middle. Episodes that touch a knob or a pull differ from v1's; datasets of v1 must
      be regenerated. Later in v2, with the env unchanged, move_near's fragile style also puts
      the object down beyond the target instead of on its near side: move_near's and all's
      datasets made before must be regenerated (sweeps rerun the cells made on them).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = MULTI_TASK,
        obs_mode: str = "state",
        render_mode: str | None = None,
        frame_skip: int = 20,
        timestep: float = 0.005,
        max_displacement: float = 0.05,
        horizons: dict[str, int] | None = None,
        reset_noise: float = 0.03,
        image_size: tuple[int, int] = (96, 96),
        render_size: tuple[int, int] = (360, 480),
        camera: str = "front",
        sleep: bool = True,
    ):
        from qtbench.errors import unknown_name

        if task != MULTI_TASK and task not in SKILLS_BY_NAME:
            raise unknown_name("task", task, [MULTI_TASK, *SKILLS_BY_NAME])
        if obs_mode not in OBS_MODES:
            raise unknown_name("obs_mode", obs_mode, OBS_MODES)
        if render_mode not in (None, "rgb_array"):
            raise unknown_name("render_mode", str(render_mode), ["rgb_array"])
        self.task = task
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.frame_skip = int(frame_skip)
        self.max_displacement = float(max_displacement)
        self.reset_noise = float(reset_noise)
        self.image_size = tuple(image_size)
        self.render_size = tuple(render_size)
        self.camera = camera
        self.instructions: tuple[Instruction, ...] = instructions_for(task)
        for name in set(horizons or {}) - set(SKILLS_BY_NAME):
            raise unknown_name("skill in horizons", name, list(SKILLS_BY_NAME))
        self.horizons = {name: s.horizon for name, s in SKILLS_BY_NAME.items()} | dict(horizons or {})
        self.max_episode_steps = max(self.horizons[ins.skill] for ins in self.instructions)

        self.scene = Scene.create(timestep)
        self.model, self.data = self.scene.model, self.scene.data
        if not sleep:  # resting objects skip computation when asleep (~3x faster); see set_physics_state
            self.model.opt.enableflags &= ~int(mujoco.mjtEnableBit.mjENBL_SLEEP)
        cameras = [self.model.camera(i).name for i in range(self.model.ncam)]
        if camera not in cameras:
            raise unknown_name("camera", camera, cameras)
        self.dt = self.model.opt.timestep * self.frame_skip
        self._state_size = mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_INTEGRATION)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

        obs = {
            "state": spaces.Box(*self.scene.state_bounds(), dtype=np.float32),
            "instruction": spaces.Text(max_length=TEXT_MAX_LENGTH, charset=TEXT_CHARSET),
        }
        if obs_mode == "pixels":
            obs["image"] = spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.instruction: Instruction = self.instructions[0]
        self.steps = 0

    # ---- episode ---------------------------------------------------------------------------
    @property
    def skill(self) -> Skill:
        return SKILLS_BY_NAME[self.instruction.skill]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.instruction = self._choose_instruction(options or {})
        mujoco.mj_resetData(self.model, self.data)
        start = HOME + self.np_random.uniform(-self.reset_noise, self.reset_noise, 3)
        self.scene.set_gripper(start)
        self.skill.sample(self.scene, self.instruction, self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0
        return self._obs(), self._info(False)

    def _choose_instruction(self, options: dict) -> Instruction:
        text = options.get("instruction")
        if text is None:
            return self.instructions[int(self.np_random.integers(len(self.instructions)))]
        valid = {ins.text: ins for ins in self.instructions}
        if text not in valid:
            from qtbench.errors import unknown_name

            raise unknown_name(f"instruction for task {self.task!r}", str(text), list(valid))
        return valid[text]

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,):
            raise ValueError(f"action must have shape (4,) = [dx, dy, dz, gripper], got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite (no NaN/inf), got {a.tolist()}")
        a = np.clip(a, -1.0, 1.0)
        d, scene = self.data, self.scene
        hand = d.xpos[scene.hand]
        target = d.mocap_pos[scene.mocap] + a[:3] * self.max_displacement
        # No wind-up: the target never runs more than 1.5 steps ahead of the real hand.
        lead = 1.5 * self.max_displacement
        target = np.clip(np.clip(target, hand - lead, hand + lead), WORKSPACE_LOW, WORKSPACE_HIGH)
        d.mocap_pos[scene.mocap] = target
        d.ctrl[:] = 0.5 * (a[3] + 1.0) * FINGER_TRAVEL
        resets_before = d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number
        mujoco.mj_step(self.model, d, nstep=self.frame_skip)
        self.steps += 1
        if d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number != resets_before:
            # MuJoCo reset the diverged simulation to the model's initial pose: the episode
            # cannot continue from a teleported scene, so it ends here, as a truncation.
            logger.warning("simulation became unstable; episode truncated (%s, step %d)",
                           self.instruction.text, self.steps)
            return self._obs(), 0.0, False, True, {**self._info(False), "physics_unstable": True}
        success = self.skill.success(scene, self.instruction)
        truncated = not success and self.steps >= self.horizons[self.instruction.skill]
        return self._obs(), float(success), success, truncated, self._info(success)

    def _obs(self) -> dict:
        obs = {"state": self.scene.state(self.instruction), "instruction": self.instruction.text}
        if self.obs_mode == "pixels":
            obs["image"] = self._render(self.image_size)
        return obs

    def _info(self, success: bool) -> dict:
        return {"success": bool(success), "instruction": self.instruction.text, "skill": self.instruction.skill}

    # ---- rendering -------------------------------------------------------------------------
    def render(self):
        if self.render_mode == "rgb_array":
            return self._render(self.render_size)
        return None

    def _render(self, size: tuple[int, int]) -> np.ndarray:
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = mujoco.Renderer(self.model, size[0], size[1])
        renderer.update_scene(self.data, camera=self.camera)
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ---- full physics state ----------------------------------------------------------------
    def get_physics_state(self) -> np.ndarray:
        """The full integration state (time, qpos, qvel, act, warm start, ctrl, mocap, ...)."""
        state = np.empty(self._state_size)
        mujoco.mj_getState(self.model, self.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        return state

    def set_physics_state(self, state: np.ndarray) -> None:
        """Restore a state from get_physics_state (the episode's instruction and step count stay).

        With ``sleep=False`` the continuation is bit-identical to the saved run. With sleeping
        on (the default) it matches to ~1e-5 m: MuJoCo's state API does not carry which
        resting bodies were asleep, and a restored env wakes them all.
        """
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self._state_size,):
            raise ValueError(f"physics state must have shape ({self._state_size},), got {state.shape}")
        mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
