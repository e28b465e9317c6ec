"""The reference recipe's throughput, measured the way vggtiny bench measures its own.

One workload per process, so that runs do not share warm state:
  python reference/bench.py --data DIR --workload augment --workers 0
prints one JSON object: {"workload", "workers", "images_per_sec", ...}.
The pipeline is the recipe as a PyTorch user writes it: ImageFolder + v2 transforms + DataLoader.
--channels-last, --cudnn-benchmark and --amp set what vggtiny sets on CUDA, mixed precision
the PyTorch way (torch.autocast, a GradScaler for fp16), so that the two compare at the same
settings.
"""

import argparse
import itertools
import json
import time

import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets

import recipe

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def loader(ds, batch, workers, shuffle, device):
    """The recipe's DataLoader; batches for a GPU in pinned memory, as vggtiny's are."""
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers,
                      persistent_workers=workers > 0, drop_last=True,
                      pin_memory=device.startswith("cuda"))


def autocast(amp, device):
    """torch.autocast at `amp`'s dtype; a context that does nothing for "off"."""
    return torch.autocast(device.split(":")[0], dtype=DTYPES.get(amp), enabled=amp != "off")


def build_model(n_classes, device, channels_last):
    torch.manual_seed(0)
    model = recipe.Net(n_classes).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def to_device(x, device, channels_last):
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_batches(batches, steps, warmup, work, device):
    """Images/s over `steps` batches after `warmup` untimed ones; `work(x, y)` per batch."""
    it = iter(batches)
    for x, y in itertools.islice(it, warmup):
        work(x, y)
    sync(device)
    start = time.perf_counter()
    n = 0
    for x, y in itertools.islice(it, steps):
        work(x, y)
        n += len(y)
    sync(device)
    return n / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--workload", required=True,
                   choices=["decode", "augment", "train-base", "finetune", "eval"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="cuDNN benchmark mode (vggtiny's on CUDA unless --deterministic)")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off",
                   help="mixed precision of the train and eval workloads")
    p.add_argument("--image-size", type=int, default=64,
                   help="side the training crop is resized to (the train workloads)")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    root = recipe.train_root(args.data)
    train = datasets.ImageFolder(root, transform=recipe.train_transform(args.image_size))
    subset = Subset(train, range(min(args.images, len(train))))
    n_classes = max(200, len(train.classes))
    device = args.device
    out = {"workload": args.workload, "workers": args.workers, "device": device,
           "images": len(subset), "batch_size": args.batch_size, "amp": args.amp,
           "channels_last": args.channels_last, "cudnn_benchmark": args.cudnn_benchmark,
           "image_size": args.image_size}

    if args.workload == "decode":
        paths = [path for path, _ in train.samples[:len(subset)]]
        start = time.perf_counter()
        for path in paths:
            Image.open(path).convert("RGB").load()
        out["images_per_sec"] = len(paths) / (time.perf_counter() - start)
    elif args.workload == "augment":
        # Batches of the whole pipeline: decode, transforms, collate.
        n_batches = max(len(subset) // args.batch_size, 1)
        batches = itertools.cycle(loader(subset, args.batch_size, args.workers, True, device))
        out["images_per_sec"] = timed_batches(batches, n_batches, 2, lambda x, y: None, device)
    elif args.workload in ("train-base", "finetune"):
        model = build_model(n_classes, device, args.channels_last)
        recipe.freeze_features(model, args.workload == "train-base")
        opt, sched = recipe.make_optimizer(model, 1e-4, 6e-4, 1404)
        # disabled, it passes the loss and the step through unchanged
        scaler = torch.amp.GradScaler(device.split(":")[0], enabled=args.amp == "fp16")
        model.train()

        def step(x, y):
            x, y = to_device(x, device, args.channels_last), y.to(device, non_blocking=True)
            opt.zero_grad()
            with autocast(args.amp, device):
                loss = F.nll_loss(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()

        batches = itertools.cycle(loader(subset, args.batch_size, args.workers, True, device))
        out["images_per_sec"] = timed_batches(batches, args.steps, 2, step, device)
        if device.startswith("cuda"):
            # what vggtiny's bench reports per stage, from the same caching allocator
            mib = 1024 * 1024
            out["peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / mib
            out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / mib
    else:
        model = build_model(n_classes, device, args.channels_last).eval()
        eval_ds = datasets.ImageFolder(root, transform=recipe.eval_transform())
        eval_subset = Subset(eval_ds, range(len(subset)))
        batch = args.batch_size if device == "cpu" else 512

        @torch.no_grad()
        def forward(x, y):
            with autocast(args.amp, device):
                model(to_device(x, device, args.channels_last)).argmax(1)

        batches = loader(eval_subset, batch, args.workers, False, device)
        n_batches = max(len(eval_subset) // batch - 1, 1)
        out["images_per_sec"] = timed_batches(batches, n_batches, 1, forward, device)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
