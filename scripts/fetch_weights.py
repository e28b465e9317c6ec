"""Downloads torchvision's ImageNet VGG16 weights and writes the file `vggtiny train-base` reads
by default, through the same conversion as scripts/convert-weights. Prints both SHA-256s."""

import argparse
import hashlib
import os
import re
import sys
import tempfile
import urllib.request

import convert_weights

DEFAULT_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default=DEFAULT_URL, help="where to download from [%(default)s]")
    p.add_argument("--out", default=convert_weights.default_out(),
                   help="output .safetensors [%(default)s]")
    args = p.parse_args()

    name = args.url.rsplit("/", 1)[-1]
    # torchvision names its files NAME-<first 8 hex digits of the SHA-256>.pth
    prefix = re.search(r"-([0-9a-f]{8,})\.pth$", name)
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, name)
        print(f"downloading {args.url}", file=sys.stderr)
        with urllib.request.urlopen(args.url) as response, open(pth, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        digest = sha256(pth)
        print(f"sha256 {digest}  {name}")
        if prefix and not digest.startswith(prefix.group(1)):
            sys.exit(f"error: {name} should have a SHA-256 starting {prefix.group(1)}; "
                     f"got {digest}: a corrupt or different file")
        convert_weights.convert(pth, args.out)


if __name__ == "__main__":
    main()
