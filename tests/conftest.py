"""Shared fixtures. Nothing here reaches the network: open_clip and the hub run offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from build_paths import checkpoint_build_paths

from mfclip_cli.model import build_model, load_model_config, save_checkpoint


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA device: where there is none they are skipped, not
    failed (``pytest -m cuda`` selects them where one is)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on one: pytest -m cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def weights_home(tmp_path_factory):
    """Every test, and every command a test runs, registers weights in a store of its own, not the
    user's."""
    home = tmp_path_factory.mktemp("mfclip-home")
    previous = os.environ.get("MFCLIP_HOME")
    os.environ["MFCLIP_HOME"] = str(home)
    yield home
    if previous is None:
        del os.environ["MFCLIP_HOME"]
    else:
        os.environ["MFCLIP_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def checkpoints_name_no_build_paths(tmp_path_factory):
    """After the session, every mfclip checkpoint the module and session fixtures (and the
    commands they ran) wrote under the session's temporary folder: none may record an absolute
    path of this machine in its header or sidecar (a checkpoint travels; issue 31). A test's own
    tmp_path is checked as the test ends (below), before a passing test's folder is removed."""
    yield
    _assert_no_build_paths(tmp_path_factory.getbasetemp())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The checkpoints a passing test wrote in its tmp_path record no absolute path either."""
    result = yield
    folder = getattr(item, "funcargs", {}).get("tmp_path")
    if folder is not None:
        _assert_no_build_paths(folder)
    return result


def _assert_no_build_paths(folder) -> None:
    found = {
        str(path): paths
        for path in sorted(folder.rglob("*.safetensors"))
        if path.is_file() and (paths := _build_paths_of(path))
    }
    assert not found, f"checkpoints recording absolute paths: {found}"


def _build_paths_of(path) -> list[str]:
    """``checkpoint_build_paths(path)``, or nothing for a file a test made unreadable or unsafe
    on purpose (``UnsafeFileError`` is a ValueError)."""
    try:
        return checkpoint_build_paths(path)
    except (OSError, ValueError):
        return []


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A tiny-config checkpoint with random weights, for scans run the way a user runs them."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_checkpoint(build_model(load_model_config("tiny")), path)
    return path


@pytest.fixture(scope="session")
def tiny_config():
    return load_model_config("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config)


@pytest.fixture
def faces(tiny_config):
    generator = torch.Generator().manual_seed(1)
    size = tiny_config.preprocess.crop_size
    return torch.rand(6, 3, size, size, generator=generator)


@pytest.fixture
def locked_folders(monkeypatch):
    """Folders named ``locked`` refuse to be listed, as the kernel refuses a user without read
    permission: the tests run as root, which ignores permission bits."""
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
