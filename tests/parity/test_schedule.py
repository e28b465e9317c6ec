"""Schedule: the lr and beta1 of every optimizer step, as logged in metrics.jsonl, equal those
torch.optim.lr_scheduler.CyclicLR (triangular2, beta1 cycling) sets, per batch and per epoch."""

import json

import pytest
import torch

BASE_LR, MAX_LR = 1e-4, 6e-4


def reference(epochs, steps_per_epoch, mode, step_size_up):
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([param], lr=BASE_LR)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=BASE_LR, max_lr=MAX_LR,
                                              step_size_up=step_size_up, mode="triangular2")
    used = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            group = opt.param_groups[0]
            used.append((group["lr"], group["betas"][0]))
            param.grad = torch.zeros(1)
            opt.step()
            if mode == "batch":
                sched.step()
        if mode == "epoch":
            sched.step()
    return used


# Full cycles (the second at half the amplitude) and then some, in either mode: per batch,
# cycles of 4 steps over 4 epochs of 4 batches; per epoch, cycles of 4 epochs over 9 (each
# epoch writes its checkpoint, so no more).
@pytest.mark.parametrize("mode,epochs,step_size_up", [("batch", 4, 2), ("epoch", 9, 2)])
def test_every_step_matches_cyclic_lr(tmp_path, vggtiny, mode, epochs, step_size_up):
    data = tmp_path / "data"
    vggtiny("synth", "--out", data, "--classes", 2, "--per-class", 5, "--val-per-class", 0)
    run = tmp_path / "run"
    # 10 images, holdout 0.2: 8 to train on, in 4 batches of 2.
    vggtiny("train-base", "--data", data, "--random-init", "--out", run, "--epochs", epochs,
            "--batch-size", 2, "--holdout", 0.2, "--lr", BASE_LR, "--max-lr", MAX_LR,
            "--step-size-up", step_size_up, "--sched-step", mode, "--log-interval", 1,
            "--device", "cpu")
    events = [json.loads(line) for line in open(run / "metrics.jsonl")]
    ours = [(e["lr"], e["beta1"]) for e in events if e["event"] == "batch"]
    assert [e["step"] for e in events if e["event"] == "batch"] == list(range(len(ours)))
    ref = reference(epochs, 4, mode, step_size_up)
    assert len(ours) == len(ref) == epochs * 4
    assert ours == ref
