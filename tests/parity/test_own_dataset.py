"""Users' own class folders (`vggtiny synth --layout folders`: train/ and a class-folder val/,
sizes from 64x64 to 160x120 and 97x131, every format ImageFolder opens, a GIF named .jpg) read by
vggtiny and by torchvision: the same classes, samples in the same order, the seed-42 holdout,
val labels by class name, and the pixels PIL gives: `Image.open(p).convert("RGB")`, through
`Resize(side)` + `CenterCrop(side)` where the size is not the stored side."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from torchvision import transforms
from torchvision.datasets import ImageFolder

import recipe


@pytest.fixture(scope="module")
def photos(tmp_path_factory, vggtiny):
    data = tmp_path_factory.mktemp("own") / "photos"
    vggtiny("synth", "--layout", "folders", "--out", data, "--classes", 3, "--per-class", 20,
            "--val-per-class", 10, "--seed", 4)
    return data


def test_scan_split_and_val_labels_equal_torchvisions(photos, vggtiny_json):
    view = vggtiny_json("inspect", "dataset", "--data", photos)
    train = ImageFolder(str(photos / "train"))
    assert view["classes"] == train.classes
    assert [tuple(s) for s in view["samples"]] == train.samples
    _, holdout = recipe.split(train, 0.05, 42)
    assert view["holdout"] == list(holdout.indices)
    val = ImageFolder(str(photos / "val"))
    by_name = [(path, train.class_to_idx[val.classes[label]]) for path, label in val.samples]
    assert [tuple(s) for s in view["val"]] == by_name


def pil_pixels(path, side):
    image = Image.open(path).convert("RGB")
    if image.size != (side, side):
        image = transforms.CenterCrop(side)(transforms.Resize(side)(image))
    return np.asarray(image)


@pytest.mark.parametrize("side", [64, 96])
def test_pixels_equal_pils_through_resize_and_center_crop(photos, tmp_path, vggtiny, side):
    paths = sorted(p for p in photos.rglob("*") if p.is_file())
    def kind(p):
        image = Image.open(p)
        return image.format + (f" {image.mode}" if image.mode in ("CMYK", "I;16") else "")

    formats = {kind(p) for p in paths}
    assert {"JPEG", "JPEG CMYK", "PNG", "PNG I;16", "GIF", "BMP", "WEBP", "TIFF", "PPM"} <= formats
    out = tmp_path / "decoded.safetensors"
    vggtiny("inspect", "decode", "--side", side, "--out", out, *paths)
    ours = load_file(str(out))["images"]
    assert ours.shape == (len(paths), side, side, 3)
    worst = {}
    for path, got in zip(paths, ours):
        diff = np.abs(got.astype(int) - pil_pixels(path, side).astype(int)).max()
        worst[path.name] = int(diff)
    assert max(worst.values()) == 0, {name: d for name, d in worst.items() if d}
