"""Shared fixtures of the parity suite: the vggtiny binary, the oracle, the shared data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))


def _binary():
    path = os.environ.get("VGGTINY_BIN", str(ROOT / "target" / "release" / "vggtiny"))
    if not os.path.exists(path):
        pytest.exit(f"vggtiny binary not found at {path}; run scripts/build", returncode=2)
    return path


@pytest.fixture(scope="session")
def vggtiny_bin():
    """The binary's path, for tests that hand it to a script."""
    return _binary()


@pytest.fixture(scope="session")
def vggtiny(tmp_path_factory):
    """Runs the binary; returns stdout, failing the test with stderr on a non-zero exit."""
    path = _binary()
    cache = tmp_path_factory.mktemp("cache")

    # The image cache goes to a throwaway directory, not the user's ~/.cache; the CPU, as the
    # PyTorch side runs there, also on a machine with a GPU.
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), VGGTINY_DEVICE="cpu")

    def run(*args, check=True):
        proc = subprocess.run([path, *map(str, args)], capture_output=True, text=True, env=env)
        if check and proc.returncode != 0:
            pytest.fail(f"vggtiny {' '.join(map(str, args))} exited {proc.returncode}:\n"
                        f"{proc.stderr}")
        return proc if not check else proc.stdout

    return run


@pytest.fixture(scope="session")
def vggtiny_json(vggtiny):
    return lambda *args: json.loads(vggtiny(*args))


@pytest.fixture(scope="session")
def mini():
    """The real 10-class Tiny ImageNet subset, or a skip when it is not on this machine."""
    path = os.environ.get("TINY_IMAGENET_MINI")
    if not path or not os.path.isdir(path):
        pytest.skip("TINY_IMAGENET_MINI not set")
    return Path(path)
