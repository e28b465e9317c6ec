"""--tensorboard: the event files, read back by the tensorboard package's own reader, hold the
scalars of metrics.jsonl at their steps."""

import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_event_files_hold_the_logged_scalars(tmp_path, vggtiny):
    data = tmp_path / "data"
    vggtiny("synth", "--out", data, "--classes", 5, "--per-class", 4, "--val-per-class", 0)
    run, events = tmp_path / "run", tmp_path / "tb"
    vggtiny("train-base", "--data", data, "--random-init", "--out", run, "--epochs", 2,
            "--batch-size", 4, "--holdout", 0.4, "--log-interval", 1, "--pred-interval", 2,
            "--tensorboard", events, "--device", "cpu")
    log = [json.loads(line) for line in open(run / "metrics.jsonl")]
    acc = EventAccumulator(str(events))
    acc.Reload()

    def series(tag):
        return [(s.step, s.value) for s in acc.Scalars(tag)]

    batches = [e for e in log if e["event"] == "batch"]
    epochs = [e for e in log if e["event"] == "epoch"]
    for tag, key in [("train/loss", "loss"), ("train/lr", "lr"), ("train/beta1", "beta1")]:
        got = series(tag)
        assert [s for s, _ in got] == [e["step"] for e in batches]
        np.testing.assert_allclose([v for _, v in got], [e[key] for e in batches], rtol=1e-6)
    assert [s for s, _ in series("train/batch_acc")] == [e["step"] for e in batches if "acc" in e]
    for key in ["train_loss", "holdout_loss", "holdout_top1", "holdout_top5", "lr",
                "images_per_sec"]:
        got = series(f"epoch/{key}")
        assert [s for s, _ in got] == [e["epoch"] for e in epochs]
        np.testing.assert_allclose([v for _, v in got], [e[key] for e in epochs], rtol=1e-6)
