"""Suite-wide settings shared by every test module."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def isolated_minari_root(tmp_path_factory):
    """No test reads or writes the user's datasets: Minari's root is a fresh temp folder
    (tests that need data generate it there or point the variable elsewhere)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari-root")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def algorithms_on_their_own_defaults(tmp_path_factory):
    """Tests see each algorithm's own defaults, not the settings frozen in qtbench/tuned.json
    (tests that freeze point the file elsewhere themselves; test_tuning checks the committed one)."""
    from qtbench import tuning

    mp = pytest.MonkeyPatch()
    mp.setattr(tuning, "TUNED_FILE", tmp_path_factory.mktemp("tuned") / "tuned.json")
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors that gain nothing from a second thread, and on a busy 2-core
    machine two OpenMP threads spin-wait for each other (measured 10-30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_datasets(tmp_path_factory):
    """The drawer_open datasets at the small profile, generated once for the whole suite.

    Tests point MINARI_DATASETS_PATH here with monkeypatch and must not modify the files
    (copy them first, as the corruption tests do)."""
    from qtbench.datasets import ensure_datasets

    root = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    ensure_datasets("drawer_open", profile="small", seed=0)
    mp.undo()
    return root
