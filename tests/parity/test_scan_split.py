"""Scan and split: vggtiny sees the files, classes, labels and holdout torchvision sees."""

import io
import warnings

import pytest
import torch
from PIL import Image
from torch.utils.data import random_split
from torchvision.datasets import ImageFolder


def jpeg_bytes(mode="RGB", size=(64, 64), color=(200, 30, 60)):
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, "JPEG")
    return buf.getvalue()


def make_messy_tree(root):
    """Classes in mixed case, nested folders, junk files, every extension spelling."""
    files = {
        "n02/images/n02_1.JPEG": jpeg_bytes(),
        "n02/images/n02_0.jpeg": jpeg_bytes(),
        "n02/images/nested/deeper/x.Jpg": jpeg_bytes(),
        "n02/images-extra/y.png": None,
        "n02/n02_boxes.txt": b"n02_0.JPEG\t0\t0\t63\t63\n",
        "n02/.DS_Store": b"junk",
        "n02/notes.md": b"junk",
        "A_upper/z.PNG": None,
        "A_upper/gray.jpg": jpeg_bytes("L"),
        "a_lower/b.webp": b"not really webp, never opened by a scan",
        "a_lower/a.TIFF": b"",
        "a_lower/c.bmp": b"",
        "a_lower/sub.jpg/inside.ppm": b"",
        "n01/1.pgm": b"",
        "n01/0.tif": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            Image.new("RGBA", (64, 64), (1, 2, 3, 4)).save(path, "PNG")
        else:
            path.write_bytes(data)
    (root / "empty_but_not_a_class.txt").write_bytes(b"")


def test_scan_equals_imagefolder_on_a_messy_tree(tmp_path, vggtiny_json):
    make_messy_tree(tmp_path)
    view = vggtiny_json("inspect", "dataset", "--data", tmp_path, "--holdout", "0.3")
    ref = ImageFolder(str(tmp_path))
    assert view["classes"] == ref.classes
    assert [tuple(s) for s in view["samples"]] == ref.samples


def test_scan_equals_imagefolder_on_real_data(mini, vggtiny_json):
    view = vggtiny_json("inspect", "dataset", "--data", mini)
    ref = ImageFolder(str(mini / "train"))
    assert view["classes"] == ref.classes
    assert [tuple(s) for s in view["samples"]] == ref.samples
    assert len(view["val"]) == 500


def make_flat_tree(root, n):
    for k in range(n):
        path = root / f"c{k % 3}" / f"img{k:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def random_split_holdout(n, seed, holdout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random_split warns about empty subsets
        _, ref = random_split(range(n), [1 - holdout, holdout],
                              generator=torch.Generator().manual_seed(seed))
    return list(ref.indices)


def test_holdout_of_a_scanned_tree_equals_random_split(tmp_path, vggtiny_json):
    make_flat_tree(tmp_path, 1000)
    view = vggtiny_json("inspect", "dataset", "--data", tmp_path, "--seed", 7,
                        "--holdout", 0.05)
    assert view["holdout"] == random_split_holdout(1000, 7, 0.05)


# Sizes around the rounding of the holdout's length, in one launch of the binary.
CASES = [(n, seed, holdout) for n in [1000, 19, 20, 21, 39, 101, 257]
         for seed, holdout in [(42, 0.05), (7, 0.05), (42, 0.2)]]


def test_holdout_equals_random_split(vggtiny_json):
    ours = vggtiny_json("inspect", "split", *(f"{n}:{s}:{h}" for n, s, h in CASES))
    assert len(ours) == len(CASES)
    for case, holdout in zip(CASES, ours):
        assert holdout == random_split_holdout(*case), case
