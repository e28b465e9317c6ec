"""Pixels: vggtiny decodes every image to the bytes PIL's convert("RGB") gives torchvision."""

from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file
from torchvision.datasets import ImageFolder


def decode(vggtiny, tmp_path, files):
    out = tmp_path / "decoded.safetensors"
    vggtiny("inspect", "decode", "--out", out, *files)
    return load_file(str(out))["images"]


def pil(files):
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def test_real_jpegs_bit_exact(mini, vggtiny, tmp_path):
    files = sorted(str(p) for p in Path(mini).glob("train/*/images/*.JPEG"))
    files += sorted(str(p) for p in Path(mini).glob("val/images/*.JPEG"))
    grayscale = sum(Image.open(f).mode == "L" for f in files)
    assert len(files) == 1500 and grayscale > 0
    ours = decode(vggtiny, tmp_path, files)
    ref = pil(files)
    mismatched = [files[i] for i in range(len(files)) if not np.array_equal(ours[i], ref[i])]
    assert not mismatched, f"{len(mismatched)} images differ from PIL, e.g. {mismatched[:3]}"


def test_other_formats_and_modes(tmp_path, vggtiny):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    images = {
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "gray.png": Image.fromarray(rgb[..., 0], "L"),
        "rgb.bmp": Image.fromarray(rgb),
        "gray.jpg": Image.fromarray(rgb[..., 0], "L"),
        "rgb.ppm": Image.fromarray(rgb),
    }
    files = []
    for name, img in images.items():
        path = tmp_path / name
        img.save(path)
        files.append(str(path))
    ours = decode(vggtiny, tmp_path, files)
    ref = pil(files)
    for i, f in enumerate(files):
        assert np.array_equal(ours[i], ref[i]), f


def test_cmyk_jpeg_close_to_pil(tmp_path, vggtiny):
    rng = np.random.default_rng(1)
    cmyk = Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "CMYK")
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95)
    ours = decode(vggtiny, tmp_path, [str(path)])[0].astype(int)
    ref = pil([str(path)])[0].astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_the_image_cache_holds_what_pil_decodes(tmp_path, vggtiny):
    """The pixels a run trains on, read from the cache file it wrote: PIL's decode of each
    training image, in torchvision's ImageFolder order (vggtiny's decoder not asked)."""
    data = tmp_path / "data"
    vggtiny("synth", "--out", data, "--classes", 3, "--per-class", 6, "--val-per-class", 0)
    cache = tmp_path / "cache"
    vggtiny("train-base", "--data", data, "--random-init", "--out", tmp_path / "run",
            "--cache-dir", cache, "--max-steps", 1, "--batch-size", 4, "--holdout", 0.2,
            "--device", "cpu")
    files = [path for path, _ in ImageFolder(str(data / "train")).samples]
    (cache_file,) = cache.glob("images-*.u8")
    raw = cache_file.read_bytes()
    # the header: magic, format version, side, count (little-endian), then the pixels, NHWC
    side = int.from_bytes(raw[12:16], "little")
    count = int.from_bytes(raw[16:24], "little")
    assert raw[:8] == b"VGGTINYC" and (side, count) == (64, len(files))
    pixels = np.frombuffer(raw, np.uint8, count * side * side * 3, offset=64)
    assert np.array_equal(pixels.reshape(count, side, side, 3), pil(files))
