"""Where datasets live, how they are written (atomically) and read back (verified).

A dataset is a Minari dataset directory ``$MINARI_DATASETS_PATH/qtbench/<task>/<split>-v0``
plus ``qtbench_manifest.json`` beside Minari's ``data/`` folder. It is written under a
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

from qtbench.data.manifest import content_hash
from qtbench.errors import QtbenchError, unknown_name
from qtbench.io import atomic_write_json

log = logging.getLogger(__name__)

SPLITS = ("demos", "failures", "mixed")
NAMESPACE = "qtbench"
VERSION = 0
MANIFEST_NAME = "qtbench_manifest.json"
_ID_RE = re.compile(rf"^{NAMESPACE}/(?P<task>[a-z_]+)/(?P<split>[a-z]+)-v{VERSION}$")


def known_tasks() -> list[str]:
    from qtbench.envs import TASKS

    return list(TASKS)


def dataset_id(task: str, split: str) -> str:
    """``qtbench/<task>/<split>-v0``; a QtbenchError for an unknown task or split."""
    if task not in known_tasks():
        raise unknown_name("task", task, known_tasks())
    if split not in SPLITS:
        raise unknown_name("dataset split", split, SPLITS)
    return f"{NAMESPACE}/{task}/{split}-v{VERSION}"


def parse_dataset_id(name: str) -> tuple[str, str]:
    """(task, split) of a dataset id; also accepts the short form ``<task>/<split>``."""
    match = _ID_RE.match(name) or _ID_RE.match(f"{NAMESPACE}/{name}-v{VERSION}")
    if not match:
        raise QtbenchError(
            f"not a qtbench dataset id: {name!r}",
            f"use qtbench/<task>/<split>-v{VERSION} with split one of {', '.join(SPLITS)} "
            "(see `qtbench data list`)",
        )
    task, split = match["task"], match["split"]
    dataset_id(task, split)  # validates both names
    return task, split


def datasets_root() -> Path:
    """Minari's dataset folder: $MINARI_DATASETS_PATH, or Minari's default when unset."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def dataset_dir(dataset_id_: str) -> Path:
    return datasets_root() / dataset_id_


def regenerate_command(task: str, profile: str | None = None, seed: int | None = None,
                       autonomous_policy: str | None = None) -> str:
    """The exact command that rebuilds a task's datasets."""
    cmd = f"qtbench data generate --task {task}"
    if profile is not None:
        cmd += f" --profile {profile}"
    if seed is not None:
        cmd += f" --seed {seed}"
    if autonomous_policy:
        cmd += f" --autonomous-policy {autonomous_policy}"
    return cmd


# ---- reading ---------------------------------------------------------------------------
@dataclass
class StoredDataset:
    """A dataset read back from disk: its episodes (as numpy dicts) and its manifest."""

    dataset_id: str
    episodes: list[dict[str, Any]]
    manifest: dict[str, Any]

    @property
    def max_episode_steps(self) -> int | None:
        return self.manifest.get("max_episode_steps")


def read_manifest(dataset_id_: str) -> dict[str, Any]:
    """The manifest of a dataset; QtbenchError (with the fix) when missing or unreadable."""
    task, _ = parse_dataset_id(dataset_id_)
    path = dataset_dir(dataset_id_) / MANIFEST_NAME
    if not (dataset_dir(dataset_id_) / "data").exists():
        raise QtbenchError(
            f"dataset {dataset_id_} not found under {datasets_root()}",
            f"generate it: {regenerate_command(task, 'default', 0)}",
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise QtbenchError(
            f"dataset {dataset_id_} has no readable manifest ({path}: {err}); it may be half-written",
            f"regenerate it: {regenerate_command(task, 'default', 0)}",
        ) from err


def _broken(dataset_id_: str, manifest: dict[str, Any], why: str) -> QtbenchError:
    task, _ = parse_dataset_id(dataset_id_)
    cmd = manifest.get("regenerate") or regenerate_command(task, manifest.get("profile", "default"), manifest.get("seed", 0))
    return QtbenchError(f"dataset {dataset_id_} is corrupt: {why}", f"regenerate it: {cmd}")


# The last few datasets read in this process, keyed by a digest of their raw file bytes:
# ensure_datasets verifies a dataset and the training loop then loads it, and parsing
# thousands of HDF5 episode groups twice costs tens of seconds on the largest task,
# while hashing the raw bytes takes a fraction of a second.
_READ_CACHE: dict[str, tuple[str, list[dict[str, Any]]]] = {}
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


def read_episodes(dataset_id_: str, manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every episode of a stored dataset as a dict of numpy arrays (read-only: shared with
    later reads of the unchanged files), through Minari's API."""
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


def _read_minari(dataset_id_: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
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
                dict(
                    states=np.asarray(obs["state"], np.float32),
                    instruction=str(texts[0]),
                    instructions=[str(t) for t in texts],
                    actions=np.asarray(ep["actions"], np.float32),
                    rewards=np.asarray(ep["rewards"], np.float32),
                    terminations=np.asarray(ep["terminations"], bool),
                    truncations=np.asarray(ep["truncations"], bool),
                    style=meta.get("style"),  # the scripted policy's style (experts.STYLES)
                )
            )
    except QtbenchError:
        raise
    except Exception as err:  # h5py/OSError/KeyError...: whatever a damaged file raises
        raise _broken(dataset_id_, manifest, f"cannot be read ({type(err).__name__}: {err})") from err
    return episodes


def verify_episodes(dataset_id_: str, episodes: list[dict[str, Any]], manifest: dict[str, Any]) -> str:
    """Recompute the content hash; QtbenchError when it or the counts differ from the manifest."""
    expected = manifest.get("content_hash")
    if len(episodes) != manifest.get("episodes"):
        raise _broken(dataset_id_, manifest, f"{len(episodes)} episodes, manifest says {manifest.get('episodes')}")
    actual = content_hash(episodes)
    if actual != expected:
        raise _broken(dataset_id_, manifest, f"content hash {actual} does not match the manifest's {expected}")
    return actual


def read_dataset(task: str, split: str, verify: bool = True) -> StoredDataset:
    """Read ``qtbench/<task>/<split>-v0`` (and check its hash unless ``verify=False``)."""
    did = dataset_id(task, split)
    manifest = read_manifest(did)
    episodes = read_episodes(did, manifest)
    if verify:
        verify_episodes(did, episodes, manifest)
    return StoredDataset(did, episodes, manifest)


def list_datasets() -> list[str]:
    """Ids of the qtbench datasets under the dataset root (complete ones only)."""
    base = datasets_root() / NAMESPACE
    if not base.is_dir():
        return []
    ids = []
    for task_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ds in sorted(p for p in task_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            did = f"{NAMESPACE}/{task_dir.name}/{ds.name}"
            if _ID_RE.match(did) and (ds / "data").is_dir():
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


def _episode_buffers(episodes: list[dict[str, Any]]) -> list[Any]:
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for i, ep in enumerate(episodes):
        num_obs = len(ep["states"])
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=int(ep["seed"]) if ep.get("seed") is not None else None,
                options={"instruction": ep["instruction"]},
                observations={
                    "state": np.asarray(ep["states"], np.float32),
                    "instruction": [ep["instruction"]] * num_obs,
                },
                actions=np.asarray(ep["actions"], np.float32),
                rewards=list(np.asarray(ep["rewards"], np.float32)),
                terminations=list(np.asarray(ep["terminations"], bool)),
                truncations=list(np.asarray(ep["truncations"], bool)),
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
    episodes: list[dict[str, Any]],
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
            styled = [i for i, ep in enumerate(episodes) if ep.get("style")]
            if styled:  # per-episode metadata: Minari's loader returns it (get_episode_metadata)
                dataset.storage.update_episode_metadata([{"style": episodes[i]["style"]} for i in styled], styled)
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
