"""The MuJoCo scene: loading assets/scene.xml, named ids, geometry constants and the state vector.

The geometry constants mirror assets/scene.xml; the skills, plans and success
predicates use them instead of repeating numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from qtbench.envs import layout
from qtbench.envs.instructions import DRAWERS, OBJECTS, Instruction

SCENE_XML = Path(__file__).parent / "assets" / "scene.xml"

# Finger slide joints: 0 = open (pads 0.098 apart) .. FINGER_TRAVEL = closed.
FINGER_TRAVEL = 0.048
FINGER_OPEN_GAP = 0.098
# Drawers: slide joint range and the interior volume in the drawer body frame.
DRAWER_TRAVEL = 0.2
DRAWER_INNER_LOW = np.array([-0.14, 0.0, 0.01])
DRAWER_INNER_HIGH = np.array([0.14, 0.21, 0.09])
DRAWER_FRONT_HEIGHT = 0.09  # top of the front panel above the drawer body origin
KNOB_HEIGHT = 0.05  # knob centre above the drawer body origin
KNOB_HALF_SIZE = np.array([0.025, 0.02, 0.012])  # the knob box's half extents (x, y, z): 5 cm wide, a grasp holds 3 cm to a side
KNOB_STANDOFF = 0.02  # the front panel's face lies this far behind (+y) the knob centre
# The finger pull beside the knob, in the drawer body frame (the front's face at y = -0.01, the
# knob's centre KNOB_STANDOFF in front of it): a ledge with a lip standing on its outer edge; one
# open finger fits into the groove between lip and front face and pulls on the lip.
PULL_X = 0.12  # x of the ledge's and lip's centre
PULL_HALF_LENGTH = 0.007  # half their length along x: a hook 1.5 cm to a side misses them
GROOVE_DEPTH = 0.028  # y from the front face to the lip's inner face (a finger is 2.4 cm deep)
LEDGE_TOP = 0.055  # z of the groove's floor
LIP_TOP = 0.063  # z of the lip's top, 8 mm above the floor
# The groove's middle on the ledge, from the knob's centre (world axes; drawers only slide).
PULL_OFFSET = np.array([PULL_X, KNOB_STANDOFF - 0.5 * GROOVE_DEPTH, LEDGE_TOP - KNOB_HEIGHT])
DRAWER_FRONT_HALF_WIDTH = 0.158
CABINET_FACE_Y = 0.15
CABINET_HALF_WIDTH = 0.18
# The counter: top at z = 0; objects are placed in COUNTER_LOW..COUNTER_HIGH (xy), outside the
# region swept by open drawers (|x| < KEEP_OUT_HALF_WIDTH and y > KEEP_OUT_Y).
COUNTER_TOP = 0.0
COUNTER_LOW = np.array([-0.42, -0.33])
COUNTER_HIGH = np.array([0.42, 0.08])
COUNTER_BOUNDS_LOW = np.array([-0.55, -0.45])
COUNTER_BOUNDS_HIGH = np.array([0.55, 0.45])
KEEP_OUT_HALF_WIDTH = 0.23
KEEP_OUT_Y = -0.2
# Closed fingers form a block of these half extents (x, y) around the gripper point.
FINGER_HALF_WIDTH = 0.012
FINGER_HALF_DEPTH = 0.012
# Each open finger's centre lies this far to either side (x) of the gripper point.
OPEN_FINGER_X = 0.055
# Gripper workspace (bounds of the point between the fingertips).
WORKSPACE_LOW = np.array([-0.48, -0.42, 0.004])
WORKSPACE_HIGH = np.array([0.48, 0.34, 0.5])
HOME = np.array([0.0, -0.25, 0.42])
# Height of each object's centre above the surface it rests on, and its footprint radius.
REST_HEIGHT = {
    "red can": 0.035,
    "green apple": 0.027,
    "orange": 0.026,
    "blue chip bag": 0.014,
    "brown rxbar": 0.014,
    "purple eggplant": 0.018,
    "white cup": 0.03,
    "yellow sponge": 0.015,
}
FOOTPRINT = {
    "red can": 0.022,
    "green apple": 0.027,
    "orange": 0.026,
    "blue chip bag": 0.042,
    "brown rxbar": 0.043,
    "purple eggplant": 0.048,
    "white cup": 0.025,
    "yellow sponge": 0.036,
}
# Half length of each object along y, the axis it lies along at reset (its radius if round).
HALF_LENGTH = {
    "red can": 0.022,
    "green apple": 0.027,
    "orange": 0.026,
    "blue chip bag": 0.035,
    "brown rxbar": 0.04,
    "purple eggplant": 0.048,
    "white cup": 0.025,
    "yellow sponge": 0.03,
}
MIN_SPACING = 0.1  # minimum centre distance between objects placed at reset
RESTING_SPEED = 0.05  # m/s: an object slower than this is "resting"
# Bounds of the state vector (see Scene.state_bounds). MuJoCo's joint limits are soft, and the
# hand's weld to its mocap target is far stiffer: jammed against a stop by the hand, a drawer
# passed its range by up to 7.6 cm and a finger by 3.3 cm (measured over 150 episodes of random
# actions), so every slide joint gets one whole travel of slack each side. Nothing is lifted
# above SCENE_TOP (twice the top of the gripper workspace), and the floor plane's drawn extent
# bounds where a fallen object can lie.
SCENE_TOP = 2 * WORKSPACE_HIGH[2]


def body_name(obj: str) -> str:
    """Object names use spaces; MJCF names use underscores."""
    return obj.replace(" ", "_")


def load_model(timestep: float | None = None) -> mujoco.MjModel:
    model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    if timestep is not None:
        model.opt.timestep = timestep
    return model


@dataclass
class Scene:
    """A model, its data and the ids every part of the suite refers to by name."""

    model: mujoco.MjModel
    data: mujoco.MjData

    def __post_init__(self) -> None:
        m = self.model
        bid = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        jid = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)  # noqa: E731
        gid = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        self.hand = bid("hand")
        self.hand_qpos = int(m.jnt_qposadr[jid("hand")])
        self.hand_qvel = int(m.jnt_dofadr[jid("hand")])
        self.mocap = int(m.body_mocapid[bid("mocap")])
        self.finger_qpos = np.array([m.jnt_qposadr[jid(n)] for n in ("finger_left", "finger_right")])
        self.drawer_body = np.array([bid(f"drawer_{d}") for d in DRAWERS])
        self.drawer_qpos = np.array([m.jnt_qposadr[jid(f"drawer_{d}")] for d in DRAWERS])
        self.knob_geom = np.array([gid(f"knob_{d}") for d in DRAWERS])
        self.object_body = np.array([bid(body_name(o)) for o in OBJECTS])
        self.object_qpos = np.array([m.jnt_qposadr[jid(body_name(o))] for o in OBJECTS])
        self.object_qvel = np.array([m.jnt_dofadr[jid(body_name(o))] for o in OBJECTS])
        self.drawer_origin = m.body_pos[self.drawer_body].copy()  # closed-drawer body origins
        self._state = np.zeros(layout.STATE_DIM, dtype=np.float32)
        self._slices = {name: f.slice for name, f in layout.FIELDS.items()}

    @classmethod
    def create(cls, timestep: float | None = None) -> "Scene":
        model = load_model(timestep)
        return cls(model, mujoco.MjData(model))

    # ---- reading ---------------------------------------------------------------------------
    def state(self, named: Instruction | None = None) -> np.ndarray:
        """The observation state vector (see layout.py); positions need mj_kinematics first.
        ``named``: the instruction whose object, target and drawer fill named_pos (zeros without)."""
        d, s, out = self.data, self._slices, self._state
        out[s["gripper_pos"]] = d.xpos[self.hand]
        out[s["finger_opening"]] = FINGER_OPEN_GAP - d.qpos[self.finger_qpos].sum()
        out[s["drawer_pos"]] = d.qpos[self.drawer_qpos]
        out[s["handle_pos"]] = d.geom_xpos[self.knob_geom].ravel()
        out[s["object_pos"]] = d.xpos[self.object_body].ravel()
        rows = np.zeros((len(layout.NAMED), 3))
        for row, role in enumerate(layout.NAMED if named is not None else ()):
            name = getattr(named, role)
            if name is None:
                continue
            rows[row] = (d.geom_xpos[self.knob_geom[layout.DRAWER_INDEX[name]]] if role == "drawer"
                         else d.xpos[self.object_body[layout.OBJECT_INDEX[name]]])
        out[s["named_pos"]] = rows.ravel()
        return out.copy()

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Finite float32 (low, high) of every state entry, derived from the model.

        Gripper and object positions lie above the floor plane, inside its extent and below
        SCENE_TOP; finger opening and drawer positions follow their joints' ranges, widened by
        one travel each side (soft limits); each knob centre lies within its own size of its
        drawer's slide line, as far as the drawer can go.
        """
        m = self.model
        floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        scene_low = np.append(m.geom_pos[floor, :2] - m.geom_size[floor, :2], m.geom_pos[floor, 2])
        scene_high = np.append(m.geom_pos[floor, :2] + m.geom_size[floor, :2], SCENE_TOP)
        jid = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)  # noqa: E731
        fingers = np.array([m.jnt_range[jid(n)] for n in ("finger_left", "finger_right")])  # (2, [lo, hi])
        drawers = np.array([m.jnt_range[jid(f"drawer_{d}")] for d in DRAWERS])
        rest = mujoco.MjData(m)  # the model's initial pose: every drawer closed (q = 0)
        mujoco.mj_kinematics(m, rest)
        knob, knob_size = rest.geom_xpos[self.knob_geom], m.geom_size[self.knob_geom]  # (drawers, 3)
        axis = rest.xaxis[[jid(f"drawer_{d}") for d in DRAWERS]]  # world slide direction per drawer
        fingers_travel, drawers_travel = np.diff(fingers)[:, 0], np.diff(drawers)[:, 0]  # the slack
        reach = np.stack([drawers[:, 0] - drawers_travel, drawers[:, 1] + drawers_travel])  # (2, drawers)
        ends = knob[None] + axis[None] * reach[:, :, None]  # (2, drawers, 3): the knob at either extreme
        bounds = {
            "gripper_pos": (scene_low, scene_high),
            "finger_opening": (FINGER_OPEN_GAP - fingers[:, 1].sum() - fingers_travel.sum(),
                               FINGER_OPEN_GAP - fingers[:, 0].sum() + fingers_travel.sum()),
            "drawer_pos": (drawers[:, 0] - drawers_travel, drawers[:, 1] + drawers_travel),
            "handle_pos": (ends.min(axis=0) - knob_size, ends.max(axis=0) + knob_size),
            "object_pos": (np.tile(scene_low, len(OBJECTS)), np.tile(scene_high, len(OBJECTS))),
            "named_pos": (np.tile(scene_low, len(layout.NAMED)), np.tile(scene_high, len(layout.NAMED))),
        }
        low = np.empty(layout.STATE_DIM, np.float32)
        high = np.empty(layout.STATE_DIM, np.float32)
        for name, (lo, hi) in bounds.items():
            low[self._slices[name]] = np.ravel(lo)
            high[self._slices[name]] = np.ravel(hi)
        return low, high

    def drawer_q(self, drawer: str) -> float:
        return float(self.data.qpos[self.drawer_qpos[layout.DRAWER_INDEX[drawer]]])

    def drawer_frame_origin(self, drawer: str, q: float | None = None) -> np.ndarray:
        """World position of a drawer body's origin at joint position q (current if None)."""
        i = layout.DRAWER_INDEX[drawer]
        q = self.drawer_q(drawer) if q is None else q
        return self.drawer_origin[i] + np.array([0.0, -q, 0.0])

    def object_pos(self, obj: str) -> np.ndarray:
        return self.data.xpos[self.object_body[layout.OBJECT_INDEX[obj]]].copy()

    def object_speed(self, obj: str) -> float:
        adr = self.object_qvel[layout.OBJECT_INDEX[obj]]
        return float(np.linalg.norm(self.data.qvel[adr : adr + 3]))

    def in_drawer(self, obj: str, drawer: str) -> bool:
        """Whether the object's centre lies inside the drawer's interior volume."""
        rel = self.object_pos(obj) - self.drawer_frame_origin(drawer)
        return bool(np.all(rel >= DRAWER_INNER_LOW) and np.all(rel <= DRAWER_INNER_HIGH))

    def on_counter(self, obj: str) -> bool:
        """Whether the object rests on the counter top (not in a drawer, not held up)."""
        p = self.object_pos(obj)
        if not (np.all(p[:2] >= COUNTER_BOUNDS_LOW) and np.all(p[:2] <= COUNTER_BOUNDS_HIGH)):
            return False
        if any(self.in_drawer(obj, d) for d in DRAWERS):
            return False
        return bool(p[2] - COUNTER_TOP < REST_HEIGHT[obj] + 0.012) and self.object_speed(obj) < RESTING_SPEED

    # ---- writing (resets) ------------------------------------------------------------------
    def set_gripper(self, pos: np.ndarray, opening_q: float = 0.0) -> None:
        d = self.data
        d.mocap_pos[self.mocap] = pos
        d.mocap_quat[self.mocap] = (1.0, 0.0, 0.0, 0.0)
        d.qpos[self.hand_qpos : self.hand_qpos + 3] = pos
        d.qpos[self.hand_qpos + 3 : self.hand_qpos + 7] = (1.0, 0.0, 0.0, 0.0)
        d.qpos[self.finger_qpos] = opening_q
        d.ctrl[:] = opening_q

    def set_drawer(self, drawer: str, q: float) -> None:
        self.data.qpos[self.drawer_qpos[layout.DRAWER_INDEX[drawer]]] = q

    def set_object(self, obj: str, pos: np.ndarray) -> None:
        adr = self.object_qpos[layout.OBJECT_INDEX[obj]]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)

    def place_on_counter(self, obj: str, xy: np.ndarray) -> None:
        self.set_object(obj, np.array([xy[0], xy[1], COUNTER_TOP + REST_HEIGHT[obj]]))

    def place_in_drawer(self, obj: str, drawer: str, local_xy: np.ndarray) -> None:
        """Put an object on a drawer's floor at (x, y) in the drawer frame (drawer q already set)."""
        origin = self.drawer_frame_origin(drawer)
        z = origin[2] + DRAWER_INNER_LOW[2] + REST_HEIGHT[obj]
        self.set_object(obj, np.array([origin[0] + local_xy[0], origin[1] + local_xy[1], z]))


def in_keep_out(xy: np.ndarray) -> bool:
    """Whether a counter point lies in the region swept by open drawers."""
    return bool(abs(xy[0]) < KEEP_OUT_HALF_WIDTH and xy[1] > KEEP_OUT_Y)


def sample_counter_positions(
    rng: np.random.Generator, count: int, taken: list[np.ndarray] | None = None, tries: int = 200
) -> list[np.ndarray]:
    """``count`` free counter spots (xy), MIN_SPACING apart from each other and from ``taken``."""
    taken = list(taken or [])
    out: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(tries):
            xy = rng.uniform(COUNTER_LOW, COUNTER_HIGH)
            if in_keep_out(xy):
                continue
            if all(np.linalg.norm(xy - t) >= MIN_SPACING for t in taken + out):
                out.append(xy)
                break
        else:
            raise RuntimeError("could not place objects on the counter without overlap")
    return out
