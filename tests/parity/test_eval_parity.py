"""Forward and eval: the same weights give the same correct counts and mean loss in vggtiny
and in the PyTorch oracle, whichever side saved them, on a synthetic dataset everywhere and on
the real subset where it is present."""

import math
from collections import namedtuple

import pytest
import torch
import torchvision.transforms.functional as TF
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

import recipe


def oracle_model(num_classes, seed=0):
    """A random-init oracle model with non-trivial BatchNorm statistics and logits spread wide
    enough that float rounding cannot reorder the top-5."""
    torch.manual_seed(seed)
    model = recipe.Net(num_classes)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 64, 64) * 2 + 0.5)
        model.vgg16.classifier[8].weight.mul_(20)
    return model


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, vggtiny):
    """10 classes: a holdout of 60 and a val set of 100 images, where a top-5 that counted
    top-4 (or top-1 off by one) would miss by several images."""
    data = tmp_path_factory.mktemp("eval") / "data"
    vggtiny("synth", "--out", data, "--classes", 10, "--per-class", 12, "--val-per-class", 10)
    return data


Dataset = namedtuple("Dataset", "root holdout real")


@pytest.fixture(params=["synthetic", "mini"])
def dataset(request):
    if request.param == "mini":
        return Dataset(request.getfixturevalue("mini"), 0.05, real=True)
    return Dataset(request.getfixturevalue("synthetic"), 0.5, real=False)


def oracle_scores(model, data, split, holdout):
    _, held_out, val, _ = recipe.datasets_for(str(data), holdout=holdout)
    loader = DataLoader(held_out if split == "holdout" else val, batch_size=256)
    return recipe.evaluate(model, loader, "cpu")


def assert_same_scores(ours, ref):
    n = ref["samples"]
    assert ours["samples"] == n
    # a random model scores neither nothing nor everything: both counts can go wrong
    assert 0 < ref["correct5"] < n and ref["correct1"] < ref["correct5"], ref
    assert round(ours["top1"] * n) == ref["correct1"]
    assert round(ours["top5"] * n) == ref["correct5"]
    assert abs(ours["loss"] - ref["loss"]) / ref["loss"] < 1e-4, (ours, ref)


@pytest.mark.parametrize("split", ["holdout", "val"])
def test_pytorch_weights_score_the_same_in_vggtiny(dataset, vggtiny_json, tmp_path, split):
    data, holdout, _ = dataset
    model = oracle_model(10)
    path = tmp_path / "torch.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    ours = vggtiny_json("eval", "--data", data, "--checkpoint", path, "--split", split,
                        "--holdout", holdout, "--json", "--device", "cpu")
    assert_same_scores(ours, oracle_scores(model, data, split, holdout))


def test_vggtiny_checkpoint_loads_strictly_and_scores_the_same(dataset, vggtiny, vggtiny_json,
                                                               tmp_path):
    data, holdout, real = dataset
    run = tmp_path / "run"
    vggtiny("train-base", "--data", data, "--random-init", "--out", run, "--epochs", 1,
            "--max-steps", 3, "--holdout", holdout, "--device", "cpu")
    model = recipe.Net(10)
    model.load_state_dict(load_file(str(run / "model.safetensors")), strict=True)
    # the real subset's 500 val images are scored above already
    for split in ["holdout"] if real else ["holdout", "val"]:
        ours = vggtiny_json("eval", "--data", data, "--checkpoint", run, "--split", split,
                            "--json", "--device", "cpu")
        assert_same_scores(ours, oracle_scores(model, data, split, holdout))


class TtaViews(torch.nn.Module):
    """Test-time augmentation as torchvision spells it: the log of the class probabilities
    averaged over each image and its mirror (flip), or over TenCrop(56) of it, each crop
    resized back to 64 (10crop)."""

    def __init__(self, model, tta):
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, x):
        if self.tta == "flip":
            views = [x, TF.hflip(x)]
        else:
            views = [TF.resize(v, [64, 64], antialias=True) for v in TF.ten_crop(x, 56)]
        return torch.stack([self.model(v).exp() for v in views]).mean(0).log()


@pytest.fixture(scope="module")
def small_val(tmp_path_factory, vggtiny):
    """10 classes, 30 val images: ten views of each are 300 forward passes a side."""
    data = tmp_path_factory.mktemp("tta") / "data"
    vggtiny("synth", "--out", data, "--classes", 10, "--per-class", 2, "--val-per-class", 3)
    return data


@pytest.mark.parametrize("tta", ["flip", "10crop"])
def test_tta_scores_as_torchvision_views_do(small_val, vggtiny_json, tmp_path, tta):
    model = oracle_model(10)
    path = tmp_path / "torch.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    ours = vggtiny_json("eval", "--data", small_val, "--checkpoint", path, "--split", "val",
                        "--tta", tta, "--json", "--device", "cpu")
    with torch.no_grad():
        ref = oracle_scores(TtaViews(model, tta), small_val, "val", 0.5)
    assert math.isfinite(ref["loss"]), ref
    assert_same_scores(ours, ref)
    # the views matter: the plain score is another
    plain = oracle_scores(model, small_val, "val", 0.5)
    assert plain["loss"] != ref["loss"]
