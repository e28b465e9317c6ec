"""scripts/fetch-weights against an HTTP server on 127.0.0.1 started here: it downloads, checks
the SHA-256 prefix torchvision puts in its file names, converts, and refuses a mismatch."""

import hashlib
import http.server
import subprocess
import threading

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from conftest import ROOT


@pytest.fixture
def server(tmp_path):
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path), **kw)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def fetch(url, out):
    return subprocess.run([str(ROOT / "scripts" / "fetch-weights"), "--url", url, "--out",
                           str(out)], capture_output=True, text=True)


def test_downloads_checks_and_converts(server, tmp_path):
    served, url = server
    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in
                torchvision.models.vgg16(weights=None).features.state_dict().items()}
    raw = served / "raw.pth"
    torch.save(features, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    named = served / f"vgg16-{digest[:8]}.pth"
    raw.rename(named)

    out = tmp_path / "out" / "vgg16.safetensors"
    proc = fetch(f"{url}/{named.name}", out)
    assert proc.returncode == 0, proc.stderr
    assert digest in proc.stdout
    loaded = load_file(str(out))
    assert set(loaded) == set(features)
    assert all(torch.equal(loaded[k], v) for k, v in features.items())

    wrong = served / "vgg16-00000000.pth"
    named.rename(wrong)
    proc = fetch(f"{url}/{wrong.name}", tmp_path / "other.safetensors")
    assert proc.returncode != 0 and "SHA-256" in proc.stderr
    assert not (tmp_path / "other.safetensors").exists()
