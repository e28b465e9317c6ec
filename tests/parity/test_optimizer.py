"""Optimizer steps: from identical weights and an identical batch (augmentation, dropout and
shuffling off), vggtiny's tensors after several Adam + CyclicLR steps match PyTorch's, in
stage 1 (frozen features bit-identical) and in stage 2 (everything trained)."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

import recipe

# 18 images, holdout 0.2: 15 to train on, in 3 batches of 5, for 2 epochs: 6 steps, with lr and
# beta1 moving. The match is expected to be exact, not merely close: vggtiny runs the same ops
# as PyTorch's single-tensor Adam. Anything less diverges within two steps, because Adam turns the
# rounding noise in a near-zero gradient (a Linear bias before ReLU + BatchNorm whose units are all
# active over the batch) into a full-size step of either sign.
CLASSES, PER_CLASS, HOLDOUT, BATCH, EPOCHS = 3, 6, 0.2, 5, 2


def oracle_train(model, data, frozen, lr, max_lr, step_size_up, label_smoothing=0.0,
                 sched_step="batch"):
    ds = ImageFolder(str(data / "train"), transform=recipe.eval_transform())
    train_part, _ = recipe.split(ds, HOLDOUT, 42)
    loader = DataLoader(Subset(ds, train_part.indices), batch_size=BATCH, shuffle=False)
    for m in model.vgg16.classifier:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    # channels-last, as vggtiny runs (and as PyTorch recommends for oneDNN and tensor cores)
    model.to(memory_format=torch.channels_last)
    recipe.train_stage(model, loader, "cpu", EPOCHS, lr, max_lr, step_size_up,
                       sched_step=sched_step, frozen=frozen, channels_last=True,
                       label_smoothing=label_smoothing)
    return model.state_dict()


@pytest.fixture
def setup(tmp_path, vggtiny):
    data = tmp_path / "data"
    vggtiny("synth", "--out", data, "--classes", CLASSES, "--per-class", PER_CLASS,
            "--val-per-class", 0)
    torch.manual_seed(1)
    model = recipe.Net(CLASSES)
    init = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(init))
    return data, init, model


def common_flags(lr, max_lr, step):
    return ["--no-augment", "--no-dropout", "--no-shuffle", "--lr", lr, "--max-lr", max_lr,
            "--step-size-up", step, "--batch-size", BATCH, "--epochs", EPOCHS, "--holdout",
            HOLDOUT, "--device", "cpu"]


def compare(ours, ref, initial, frozen_features):
    assert set(ours) == set(ref)
    moved = 0
    for name, want in ref.items():
        got = ours[name]
        if frozen_features and ".features." in name:
            assert torch.equal(got, initial[name]), f"{name} changed in stage 1"
            continue
        if want.dtype == torch.int64:
            assert torch.equal(got, want), name
            continue
        diff = (got - want).abs().max().item()
        assert diff < 1e-5, f"{name}: max abs diff {diff}"
        moved += not torch.equal(want, initial[name])
    assert moved > 0


# Per epoch, as the original program stepped its scheduler: the second epoch runs at
# base_lr + (max_lr - base_lr) / 2 with step_size_up 2.
@pytest.mark.parametrize("sched_step", ["batch", "epoch"])
@pytest.mark.parametrize("stage,lr,max_lr", [("base", 1e-3, 3e-3), ("finetune", 1e-4, 3e-4)])
def test_adam_steps_match(tmp_path, vggtiny, setup, stage, lr, max_lr, sched_step):
    data, init, model = setup
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    run = tmp_path / stage
    start = ["train-base", "--init"] if stage == "base" else ["finetune", "--from"]
    vggtiny(start[0], "--data", data, start[1], init, "--out", run,
            *common_flags(lr, max_lr, 2), "--sched-step", sched_step)
    frozen = stage == "base"
    ref = oracle_train(model, data, frozen, lr, max_lr, 2, sched_step=sched_step)
    compare(load_file(str(run / "model.safetensors")), ref, initial, frozen_features=frozen)


@pytest.mark.parametrize("stage", ["base", "finetune"])
def test_label_smoothed_steps_match(tmp_path, vggtiny, setup, stage):
    """--label-smoothing 0.1 against F.cross_entropy(logits, y, label_smoothing=0.1)."""
    data, init, model = setup
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    run = tmp_path / stage
    lr, max_lr = (1e-3, 3e-3) if stage == "base" else (1e-4, 3e-4)
    start = ["train-base", "--init"] if stage == "base" else ["finetune", "--from"]
    vggtiny(start[0], "--data", data, start[1], init, "--out", run, "--label-smoothing", 0.1,
            *common_flags(lr, max_lr, 2))
    frozen = stage == "base"
    ref = oracle_train(model, data, frozen, lr, max_lr, 2, label_smoothing=0.1)
    compare(load_file(str(run / "model.safetensors")), ref, initial, frozen_features=frozen)
