"""Forward and eval: the same weights give the same correct counts and mean loss in vggtiny
and in the PyTorch oracle, whichever side saved them."""

import pytest
import torch
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


def oracle_scores(model, data, split):
    _, holdout, val, _ = recipe.datasets_for(str(data))
    loader = DataLoader(holdout if split == "holdout" else val, batch_size=256)
    return recipe.evaluate(model, loader, "cpu")


def assert_same_scores(ours, ref):
    n = ref["samples"]
    assert ours["samples"] == n
    assert round(ours["top1"] * n) == ref["correct1"]
    assert round(ours["top5"] * n) == ref["correct5"]
    assert abs(ours["loss"] - ref["loss"]) / ref["loss"] < 1e-4, (ours, ref)


@pytest.mark.parametrize("split", ["holdout", "val"])
def test_pytorch_weights_score_the_same_in_vggtiny(mini, vggtiny_json, tmp_path, split):
    model = oracle_model(10)
    path = tmp_path / "torch.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    ours = vggtiny_json("eval", "--data", mini, "--checkpoint", path, "--split", split,
                        "--json", "--device", "cpu")
    assert_same_scores(ours, oracle_scores(model, mini, split))


def test_vggtiny_checkpoint_loads_strictly_and_scores_the_same(mini, vggtiny, vggtiny_json,
                                                               tmp_path):
    run = tmp_path / "run"
    vggtiny("train-base", "--data", mini, "--random-init", "--out", run, "--epochs", 1,
            "--max-steps", 3, "--device", "cpu")
    model = recipe.Net(10)
    model.load_state_dict(load_file(str(run / "model.safetensors")), strict=True)
    for split in ["holdout", "val"]:
        ours = vggtiny_json("eval", "--data", mini, "--checkpoint", run, "--split", split,
                            "--json", "--device", "cpu")
        assert_same_scores(ours, oracle_scores(model, mini, split))
