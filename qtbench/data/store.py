"""Where datasets live, how they are written (atomically) and read back (verified).

A dataset is a Minari dataset directory ``$MINARI_DATASETS_PATH/<id>`` (ids: see
:class:`DatasetName`) plus ``qtbench_manifest.json`` beside Minari's ``data/`` folder. It is written under a
hidden staging folder of the same root (Minari's listing skips hidden folders) and renamed
into place only once complete and read back, so a reader never sees half a dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from qtbench.algorithms.base import SPLITS
from qtbench.atomic import atomic_write_json
from qtbench.data.episode import Episode
from qtbench.data.hashing import content_hash
from qtbench.data.profiles import get_profile
from qtbench.errors import QtbenchError, unknown_name
from qtbench.versions import installed_version

log = logging.getLogger(__name__)

NAMESPACE = "qtbench"
VERSION = 0
MANIFEST_NAME = "qtbench_manifest.json"
# Failure sources: the BC collection policy trained on the demos (the default, as in the
# paper), the erring scripted collector, or "policy<8 hex digits of its weights hash>" for
# a checkpoint given with --autonomous-policy.
DEFAULT_SOURCE = "bc"
SCRIPTED_SOURCE = "scripted"
_NAME_RE = re.compile(
    r"^(?:demos-(?P<dprofile>[a-z]+)|(?P<split>failures|mixed)-(?P<profile>[a-z]+)-(?P<source>[a-z0-9]+))$"
)
_ID_RE = re.compile(rf"^{NAMESPACE}/(?P<task>[a-z_]+)/(?P<name>[a-z0-9-]+)-v{VERSION}$")


@dataclass(frozen=True)
class DatasetName:
    """What a dataset id says: task, split, profile and (for failures and mixed) failure source.

    Ids follow Minari's ``namespace/name-vN`` grammar::

        qtbench/<task>/demos-<profile>-v0                 scripted demonstrations
        qtbench/<task>/failures-<profile>-<source>-v0     failed episodes of <source>
        qtbench/<task>/mixed-<profile>-<source>-v0        demos + failures (the paper's data)

    The demos do not depend on the failure source, so every source of a profile shares them.
    """

    task: str
    split: str
    profile: str = "default"
    source: str = DEFAULT_SOURCE

    @property
    def id(self) -> str:
        name = f"demos-{self.profile}" if self.split == "demos" else f"{self.split}-{self.profile}-{self.source}"
        return f"{NAMESPACE}/{self.task}/{name}-v{VERSION}"


def known_tasks() -> list[str]:
    from qtbench.envs import TASKS

    return list(TASKS)


def check_source(source: str) -> str:
    """``source`` when it can name a failure source in an id; a QtbenchError otherwise."""
    if not re.fullmatch(r"[a-z0-9]+", source or ""):
        raise QtbenchError(
            f"unknown failure source {source!r}",
            f"use --failures {DEFAULT_SOURCE} (the BC collection policy, default) or --failures "
            f"{SCRIPTED_SOURCE}, or give a trained checkpoint with --autonomous-policy",
        )
    return source


def dataset_id(task: str, split: str, profile: str = "default", source: str = DEFAULT_SOURCE) -> str:
    """The id of one dataset (see :class:`DatasetName`); a QtbenchError for an unknown name."""
    if task not in known_tasks():
        raise unknown_name("task", task, known_tasks())
    if split not in SPLITS:
        raise unknown_name("dataset split", split, SPLITS)
    get_profile(profile)
    return DatasetName(task, split, profile, check_source(source)).id


def parse_dataset_id(name: str) -> DatasetName:
    """What a dataset id names; also accepts the short form ``<task>/<name>`` (no namespace, no version)."""
    match = _ID_RE.match(name) or _ID_RE.match(f"{NAMESPACE}/{name}-v{VERSION}")
    parts = _NAME_RE.match(match["name"]) if match else None
    if not parts:
        raise QtbenchError(
            f"not a qtbench dataset id: {name!r}",
            f"use qtbench/<task>/demos-<profile>-v{VERSION} or qtbench/<task>/<failures|mixed>-<profile>-<source>-"
            f"v{VERSION}, e.g. qtbench/drawer_open/mixed-default-{DEFAULT_SOURCE}-v{VERSION} (see `qtbench data list`)",
        )
    if parts["dprofile"]:
        parsed = DatasetName(match["task"], "demos", parts["dprofile"])
    else:
        parsed = DatasetName(match["task"], parts["split"], parts["profile"], parts["source"])
    dataset_id(parsed.task, parsed.split, parsed.profile, parsed.source)  # validates the names
    return parsed


def datasets_root() -> Path:
    """Minari's dataset folder: $MINARI_DATASETS_PATH, or Minari's default when unset."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def dataset_dir(dataset_id_: str) -> Path:
    return datasets_root() / dataset_id_


def regenerate_command(task: str, profile: str = "default", seed: int = 0, source: str = DEFAULT_SOURCE,
                       autonomous_policy: str | None = None) -> str:
    """The exact command that rebuilds a task's datasets of one profile and failure source."""
    cmd = f"qtbench data generate --task {task} --profile {profile} --seed {seed}"
    if autonomous_policy:
        return cmd + f" --autonomous-policy {autonomous_policy}"
    if source != DEFAULT_SOURCE:
        cmd += f" --failures {source}"
    return cmd


def _regenerate_hint(dataset_id_: str, manifest: dict[str, Any] | None = None) -> str:
    name = parse_dataset_id(dataset_id_)
    if manifest and manifest.get("regenerate"):
        return manifest["regenerate"]
    return regenerate_command(name.task, name.profile, 0, name.source)


# ---- reading ---------------------------------------------------------------------------
@dataclass
class StoredDataset:
    """A dataset read back from disk: its episodes and its manifest."""

    dataset_id: str
    episodes: list[Episode]
    manifest: dict[str, Any]

    @property
    def max_episode_steps(self) -> int | None:
        return self.manifest.get("max_episode_steps")


def read_manifest(dataset_id_: str) -> dict[str, Any]:
    """The manifest of a dataset; QtbenchError (with the fix) when missing or unreadable."""
    path = dataset_dir(dataset_id_) / MANIFEST_NAME
    if not (dataset_dir(dataset_id_) / "data").exists():
        raise QtbenchError(
            f"dataset {dataset_id_} not found under {datasets_root()}",
            f"generate it: {_regenerate_hint(dataset_id_)}",
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise QtbenchError(
            f"dataset {dataset_id_} has no readable manifest ({path}: {err}); it may be half-written",
            f"regenerate it: {_regenerate_hint(dataset_id_)}",
        ) from err


def _broken(dataset_id_: str, manifest: dict[str, Any], why: str) -> QtbenchError:
    return QtbenchError(f"dataset {dataset_id_} is corrupt: {why}", f"regenerate it: {_regenerate_hint(dataset_id_, manifest)}")


# The last few datasets read in this process, keyed by a digest of their raw file bytes:
# ensure_datasets verifies a dataset and the training loop then loads it, and parsing
# thousands of HDF5 episode groups twice costs tens of seconds on the largest task,
# while hashing the raw bytes takes a fraction of a second.
_READ_CACHE: dict[str, tuple[str, list[Episode]]] = {}
_READ_CACHE_SIZE = 3


def _files_key(dataset_id_: str) -> str:
    root = dataset_dir(dataset_id_)
    digest = hashlib.blake2b()
    for path in sorted([*root.joinpath("data").iterdir(), root / MANIFEST_NAME]):
        if path.is_file():
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "blake2b").digest())
    return digest.hexdigest()


def read_episodes(dataset_id_: str, manifest: dict[str, Any] | None = None) -> list[Episode]:
    """Every episode of a stored dataset (its arrays are shared with later reads of the
    unchanged files: do not modify them), through Minari's API."""
    manifest = manifest if manifest is not None else read_manifest(dataset_id_)
    try:
        key = _files_key(dataset_id_)
    except OSError as err:
        raise _broken(dataset_id_, manifest, f"files missing ({err})") from err
    where = str(dataset_dir(dataset_id_).resolve())
    cached = _READ_CACHE.get(where)
    if cached is not None and cached[0] == key:
        return cached[1]
    episodes = _read_minari(dataset_id_, manifest)
    _READ_CACHE.pop(where, None)
    _READ_CACHE[where] = (key, episodes)
    while len(_READ_CACHE) > _READ_CACHE_SIZE:
        _READ_CACHE.pop(next(iter(_READ_CACHE)))
    return episodes


def _read_minari(dataset_id_: str, manifest: dict[str, Any]) -> list[Episode]:
    import minari

    try:
        dataset = minari.load_dataset(dataset_id_)
        raw = list(dataset.storage.get_episodes(range(dataset.total_episodes)))
        metadata = list(dataset.storage.get_episode_metadata(range(dataset.total_episodes)))
        episodes = []
        for ep, meta in zip(raw, metadata):
            obs = ep["observations"]
            texts = obs["instruction"]
            episodes.append(
                Episode(
                    states=np.asarray(obs["state"], np.float32),
                    instruction=str(texts[0]),
                    instructions=tuple(str(t) for t in texts),
                    actions=np.asarray(ep["actions"], np.float32),
                    rewards=np.asarray(ep["rewards"], np.float32),
                    terminations=np.asarray(ep["terminations"], bool),
                    truncations=np.asarray(ep["truncations"], bool),
                    style=meta.get("style"),  # the scripted policy's style (plans.STYLES)
                )
            )
    except QtbenchError:
        raise
    except Exception as err:  # h5py/OSError/KeyError...: whatever a damaged file raises
        raise _broken(dataset_id_, manifest, f"cannot be read ({type(err).__name__}: {err})") from err
    return episodes


def verify_episodes(dataset_id_: str, episodes: list[Episode], manifest: dict[str, Any]) -> str:
    """Recompute the content hash; QtbenchError when it or the counts differ from the manifest."""
    expected = manifest.get("content_hash")
    if len(episodes) != manifest.get("episodes"):
        raise _broken(dataset_id_, manifest, f"{len(episodes)} episodes, manifest says {manifest.get('episodes')}")
    actual = content_hash(episodes)
    if actual != expected:
        raise _broken(dataset_id_, manifest, f"content hash {actual} does not match the manifest's {expected}")
    return actual


def recorded_env_id(dataset_id_: str) -> str | None:
    """The Gymnasium id of the env that recorded a dataset (Minari's ``env_spec``, read with
    Minari's own metadata reader), or None when its metadata has none."""
    from minari.dataset.minari_storage import MinariStorage

    try:
        return json.loads(MinariStorage.read_raw_metadata(dataset_dir(dataset_id_) / "data")["env_spec"])["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_env_version(dataset_id_: str, manifest: dict[str, Any]) -> None:
    """QtbenchError when the dataset was recorded by another version of its task's env: an
    older version's episodes (other demonstrator styles, another scene) would load with the
    same shapes and silently train on the old data. (Datasets written by other envs, as the
    store's tests do, are not checked.)"""
    from qtbench.envs import TASKS

    current, recorded = TASKS[parse_dataset_id(dataset_id_).task], recorded_env_id(dataset_id_)
    if recorded and recorded != current and recorded.rsplit("-v", 1)[0] == current.rsplit("-v", 1)[0]:
        raise QtbenchError(
            f"dataset {dataset_id_} was recorded by {recorded}, not by this version's "
            f"{current} (the scene or the demonstrators changed since)",
            f"regenerate it: {_regenerate_hint(dataset_id_, manifest)}",
        )


_PHYSICS_WARNED: set[str] = set()  # datasets already named in this process (a sweep reads one per cell)


def check_physics_version(dataset_id_: str, manifest: dict[str, Any]) -> None:
    """Warn (once per dataset and process) when the dataset was generated with another MuJoCo
    than the installed one: its episodes are valid, but regenerating them (or evaluating on
    them) gives other episodes, so runs on it do not reproduce committed numbers (pyproject
    pins the version they used)."""
    recorded = manifest.get("versions", {}).get("mujoco")
    installed = installed_version("mujoco")
    if not recorded or installed is None or recorded == installed or dataset_id_ in _PHYSICS_WARNED:
        return
    _PHYSICS_WARNED.add(dataset_id_)
    log.warning("dataset %s was generated with MuJoCo %s, this install has %s: other physics, so "
                "other failure episodes and evaluations than the committed results'; install "
                "mujoco==%s, or regenerate it: %s", dataset_id_, recorded, installed, recorded,
                _regenerate_hint(dataset_id_, manifest))


def read_dataset(did: str, verify: bool = True) -> StoredDataset:
    """Read the dataset with id ``did`` (and check its env version and hash unless
    ``verify=False``; warn when its MuJoCo is not the installed one)."""
    parse_dataset_id(did)
    manifest = read_manifest(did)
    check_physics_version(did, manifest)
    if verify:
        check_env_version(did, manifest)
    episodes = read_episodes(did, manifest)
    if verify:
        verify_episodes(did, episodes, manifest)
    return StoredDataset(did, episodes, manifest)


def data_record(task: str, profile: str, source: str, split: str) -> dict[str, Any]:
    """What a run trained on, for its config.json and eval.json: the dataset it read, the
    content hashes of its regime's three datasets, and the regime's fingerprint (the mixed
    dataset's hash, which covers the demos and the failures): runs with equal fingerprints
    trained on the same data, whichever split each one read."""
    ids = {s: dataset_id(task, s, profile, source) for s in SPLITS}
    hashes = {did: read_manifest(did)["content_hash"] for did in ids.values()}
    return {
        "regime": f"{profile}-{source}",
        "profile": profile,
        "failure_source": source,
        "dataset_id": ids[split],
        "content_hashes": hashes,
        "fingerprint": hashes[ids["mixed"]],
    }


def list_datasets() -> list[str]:
    """Ids of the qtbench datasets under the dataset root (complete ones only)."""
    base = datasets_root() / NAMESPACE
    if not base.is_dir():
        return []
    ids = []
    for task_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ds in sorted(p for p in task_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            did = f"{NAMESPACE}/{task_dir.name}/{ds.name}"
            if _ID_RE.match(did) and _NAME_RE.match(_ID_RE.match(did)["name"]) and (ds / "data").is_dir():
                ids.append(did)
    return ids


# ---- writing ---------------------------------------------------------------------------
STAGING_PREFIX = ".qtbench-staging-"


def _remove_abandoned_staging(root: Path) -> None:
    """Delete staging folders left by writer processes that no longer exist (killed runs)."""
    for path in root.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("removing %s, left by a killed writer", path)
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


@contextlib.contextmanager
def use_datasets_path(path: str | Path) -> Iterator[None]:
    """Point Minari at ``path`` for the duration (Minari reads the variable at each call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _episode_buffers(episodes: list[Episode]) -> list[Any]:
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for i, ep in enumerate(episodes):
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=int(ep.seed) if ep.seed is not None else None,
                options={"instruction": ep.instruction},
                observations={
                    "state": np.asarray(ep.states, np.float32),
                    "instruction": [ep.instruction] * len(ep.states),
                },
                actions=np.asarray(ep.actions, np.float32),
                rewards=list(np.asarray(ep.rewards, np.float32)),
                terminations=list(np.asarray(ep.terminations, bool)),
                truncations=list(np.asarray(ep.truncations, bool)),
            )
        )
    return buffers


def _ensure_namespace(namespace: str, description: str) -> None:
    from minari.namespace import create_namespace, list_local_namespaces

    if namespace not in list_local_namespaces():
        with contextlib.suppress(ValueError):  # created meanwhile by another process
            create_namespace(namespace, description=description)


def write_dataset(
    dataset_id_: str,
    episodes: list[Episode],
    env_id: str,
    manifest: dict[str, Any],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Write a Minari dataset and its manifest atomically, replacing any previous one.

    ``metadata`` holds create_dataset_from_buffers' descriptive keywords (algorithm_name,
    author, code_permalink, description...). Returns the manifest as written (with the
    dataset id, episode count and content hash added).
    """
    import minari

    root = datasets_root()
    final = root / dataset_id_
    manifest = dict(manifest, dataset_id=dataset_id_, episodes=len(episodes), content_hash=content_hash(episodes))
    _remove_abandoned_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        with use_datasets_path(staging), warnings.catch_warnings():
            # qtbench publishes no contact address; Minari warns about every missing field.
            warnings.filterwarnings("ignore", message=".*author_email.*")
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id_,
                buffer=_episode_buffers(episodes),
                env=env_id,
                eval_env=env_id,
                ref_min_score=0.0,
                ref_max_score=1.0,
                **metadata,
            )
            styled = [i for i, ep in enumerate(episodes) if ep.style]
            if styled:  # per-episode metadata: Minari's loader returns it (get_episode_metadata)
                dataset.storage.update_episode_metadata([{"style": episodes[i].style} for i in styled], styled)
            staged = staging / dataset_id_
            atomic_write_json(staged / MANIFEST_NAME, manifest)
            verify_episodes(dataset_id_, read_episodes(dataset_id_, manifest), manifest)
        namespace = dataset_id_.rsplit("/", 1)[0]
        _ensure_namespace(NAMESPACE, "qtbench: offline RL on language-conditioned manipulation")
        _ensure_namespace(namespace, f"qtbench datasets of task {namespace.split('/')[-1]}")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # move the old one aside first, so the swap is two renames
            trash = Path(tempfile.mkdtemp(prefix=".qtbench-trash-", dir=root))
            os.replace(final, trash / "old")
            os.replace(staged, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staged, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s (%d episodes) to %s", dataset_id_, len(episodes), final)
    return manifest
