"""Converts a PyTorch VGG16 .pth (torchvision's vgg16-397923af.pth, or a state_dict saved by the
original program) into the .safetensors file vggtiny reads, loading with weights_only=True."""

import argparse
import hashlib
import os
import sys

import torch
from safetensors.torch import save_file


def default_out():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "vggtiny", "vgg16-imagenet.safetensors")


def state_dict_of(obj):
    """The tensor dict inside a loaded checkpoint: a bare state_dict or one nested under a
    common key."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return state_dict_of(obj[key])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    sys.exit("error: no state_dict of tensors found in the file")


def convert(pth, out):
    """Writes the tensors of `pth` to `out` (safetensors, atomically); prints its SHA-256."""
    tensors = state_dict_of(torch.load(pth, map_location="cpu", weights_only=True))
    names = [k.removeprefix("vgg16.") for k in tensors]
    if not any(n.startswith("features.") for n in names):
        sys.exit(f"error: {pth} has no features.* tensors; not a VGG16 checkpoint")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, out)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {len(tensors)} tensors to {out}")
    print(f"sha256 {digest}  {os.path.basename(out)}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("pth", help="PyTorch checkpoint (.pth)")
    p.add_argument("--out", default=default_out(), help="output .safetensors [%(default)s]")
    args = p.parse_args()
    convert(args.pth, args.out)


if __name__ == "__main__":
    main()
