"""scripts/convert-weights: a torchvision .pth and an original-program .pth both become
safetensors whose features vggtiny trains on, unchanged by the frozen stage."""

import subprocess

import pytest
import torch
import torchvision
from safetensors.torch import load_file

import recipe
from conftest import ROOT


def convert(pth, out):
    subprocess.run([str(ROOT / "scripts" / "convert-weights"), str(pth), "--out", str(out)],
                   check=True, capture_output=True)


@pytest.mark.parametrize("flavour", ["torchvision", "original-program"])
def test_converted_weights_feed_train_base(tmp_path, vggtiny, flavour):
    torch.manual_seed(3)
    if flavour == "torchvision":
        state = torchvision.models.vgg16(weights=None).state_dict()
    else:
        state = recipe.Net(200).state_dict()
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": state} if flavour == "original-program" else state, pth)
    st = tmp_path / "w.safetensors"
    convert(pth, st)

    data = tmp_path / "data"
    vggtiny("synth", "--out", data, "--classes", 3, "--per-class", 6, "--val-per-class", 1)
    run = tmp_path / "run"
    vggtiny("train-base", "--data", data, "--weights", st, "--out", run, "--max-steps", 1,
            "--batch-size", 4, "--holdout", 0.2, "--device", "cpu")
    trained = load_file(str(run / "model.safetensors"))
    for name, tensor in state.items():
        bare = name.removeprefix("vgg16.")
        if bare.startswith("features."):
            assert torch.equal(trained["vgg16." + bare], tensor), name


def test_a_file_without_features_is_refused(tmp_path):
    pth = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, pth)
    proc = subprocess.run([str(ROOT / "scripts" / "convert-weights"), str(pth), "--out",
                           str(tmp_path / "o.safetensors")], capture_output=True, text=True)
    assert proc.returncode != 0 and "features" in proc.stderr
