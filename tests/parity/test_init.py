"""Initialisation: the new head follows the recipe (kaiming-uniform Linear weights with bound
sqrt(6 / fan_in), zero biases, BatchNorm 1/0), and random-init features follow torchvision's
kaiming-normal (fan-out) initialisation of VGG16."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_augment import ks_uniform


@pytest.fixture(scope="module")
def fresh(vggtiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "init.safetensors"
    vggtiny("inspect", "init", "--classes", 200, "--seed", 5, "--out", path)
    return load_file(str(path))


@pytest.mark.parametrize("index,fan_in,out", [(0, 25088, 512), (4, 512, 512), (8, 512, 200)])
def test_linear_weights_are_kaiming_uniform(fresh, index, fan_in, out):
    w = fresh[f"vgg16.classifier.{index}.weight"]
    assert w.shape == (out, fan_in)
    bound = math.sqrt(6 / fan_in)
    assert w.abs().max().item() <= bound
    sample = w.flatten()[torch.randperm(w.numel(), generator=torch.Generator().manual_seed(0))
                         [:50000]].numpy()
    assert ks_uniform(sample, -bound, bound) < 1.95 / math.sqrt(len(sample))
    assert torch.count_nonzero(fresh[f"vgg16.classifier.{index}.bias"]) == 0


@pytest.mark.parametrize("index", [2, 6])
def test_batchnorm_starts_at_identity(fresh, index):
    t = lambda f: fresh[f"vgg16.classifier.{index}.{f}"]
    assert torch.equal(t("weight"), torch.ones(512))
    assert torch.equal(t("bias"), torch.zeros(512))
    assert torch.equal(t("running_mean"), torch.zeros(512))
    assert torch.equal(t("running_var"), torch.ones(512))
    assert t("num_batches_tracked").dtype == torch.int64 and t("num_batches_tracked").item() == 0


def test_features_follow_torchvision_init(fresh):
    for index in [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]:
        w = fresh[f"vgg16.features.{index}.weight"]
        want = math.sqrt(2 / (w.shape[0] * 9))
        assert abs(w.std().item() / want - 1) < 0.05, index
        assert abs(w.mean().item()) < 0.05 * want, index
        assert torch.count_nonzero(fresh[f"vgg16.features.{index}.bias"]) == 0
