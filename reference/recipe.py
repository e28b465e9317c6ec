"""The recipe of RECIPE.md written the way a PyTorch user writes it.

It is the oracle of the parity suite (tests/parity) and the baseline of the benchmark
(scripts/bench-vs-pytorch): ImageFolder, the seeded 95/5 random_split, the v2 transforms, the
VGG16 with its classifier replaced and wrapped as attribute ``vgg16``, top-1/top-5 evaluation,
Adam with CyclicLR (triangular2, beta1 cycling) stepped per batch or per epoch.
"""

import argparse
import json
import os
import time

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import datasets
from torchvision.transforms import v2

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def train_transform(side=64):
    """The recipe's training transforms; `side` other than its 64 is the benchmark's larger
    input (the same crop, resized to `side`)."""
    return v2.Compose([
        v2.RandomResizedCrop(side, scale=(56 / 64, 56 / 64), ratio=(1.0, 1.0)),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(saturation=(0.5, 2.0), hue=(-0.05, 0.05)),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def eval_transform():
    return v2.Compose([
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def train_root(data):
    """A Tiny ImageNet root has train/; any other directory is the class-folder tree itself."""
    train = os.path.join(data, "train")
    return train if os.path.isdir(train) else data


def split(dataset, holdout=0.05, seed=42):
    """The recipe's split: (train subset, holdout subset)."""
    return random_split(dataset, [1 - holdout, holdout],
                        generator=torch.Generator().manual_seed(seed))


class TinyVal(Dataset):
    """The official val/ set, labelled through val_annotations.txt."""

    def __init__(self, val_dir, class_to_idx, transform):
        self.samples = []
        with open(os.path.join(val_dir, "val_annotations.txt")) as f:
            for line in f:
                if line.strip():
                    name, wnid = line.rstrip("\n").split("\t")[:2]
                    self.samples.append(
                        (os.path.join(val_dir, "images", name), class_to_idx[wnid]))
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(datasets.folder.default_loader(path)), label


class Net(nn.Module):
    """VGG16 with the recipe's head, wrapped as ``vgg16`` like the original program."""

    def __init__(self, num_classes):
        super().__init__()
        self.vgg16 = torchvision.models.vgg16(weights=None)
        self.vgg16.classifier = nn.Sequential(
            nn.Linear(25088, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(0.5),
            nn.Linear(512, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )
        for m in self.vgg16.classifier:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.out = nn.LogSoftmax(dim=1)

    def forward(self, x):
        return self.out(self.vgg16(x))


@torch.no_grad()
def evaluate(model, loader, device):
    """Mean NLL, top-1 and top-5 over a loader, in eval mode."""
    model.eval()
    loss, top1, top5, n = 0.0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += F.nll_loss(out, y, reduction="sum").item()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        top1 += (top[:, 0] == y).sum().item()
        top5 += (top == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    return {"samples": n, "loss": loss / n, "top1": top1 / n, "top5": top5 / n,
            "correct1": top1, "correct5": top5}


def make_optimizer(model, lr, max_lr, step_size_up):
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=lr)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=lr, max_lr=max_lr, step_size_up=step_size_up, mode="triangular2")
    return opt, sched


def freeze_features(model, frozen):
    for name, p in model.named_parameters():
        p.requires_grad = not (frozen and not name.startswith("vgg16.classifier."))


def loss_of(model, x, y, label_smoothing=0.0):
    """The recipe's LogSoftmax + NLLLoss; with label smoothing, cross_entropy on the logits."""
    if label_smoothing:
        return F.cross_entropy(model.vgg16(x), y, label_smoothing=label_smoothing)
    return F.nll_loss(model(x), y)


def train_stage(model, loader, device, epochs, lr, max_lr, step_size_up, sched_step="batch",
                frozen=False, log=None, channels_last=False, label_smoothing=0.0):
    """One stage of the recipe; returns the per-step (lr, beta1) actually used."""
    freeze_features(model, frozen)
    opt, sched = make_optimizer(model, lr, max_lr, step_size_up)
    used = []
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            group = opt.param_groups[0]
            used.append((group["lr"], group["betas"][0]))
            opt.zero_grad()
            loss = loss_of(model, x, y, label_smoothing)
            loss.backward()
            opt.step()
            if sched_step == "batch":
                sched.step()
            if log:
                log(epoch, loss)
        if sched_step == "epoch":
            sched.step()
    return used


def datasets_for(data, holdout=0.05, seed=42, augment=True):
    """(train subset, holdout subset, val dataset or None, classes)."""
    root = train_root(data)
    train_full = datasets.ImageFolder(root, transform=train_transform() if augment
                                      else eval_transform())
    eval_full = datasets.ImageFolder(root, transform=eval_transform())
    train_part, holdout_part = split(train_full, holdout, seed)
    holdout_eval = torch.utils.data.Subset(eval_full, holdout_part.indices)
    val_dir = os.path.join(data, "val")
    val = TinyVal(val_dir, train_full.class_to_idx, eval_transform()) \
        if root != data and os.path.isdir(val_dir) else None
    return train_part, holdout_eval, val, train_full.classes


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def fit(model, loader, device, epochs, lr, max_lr, step_size_up, sched_step, frozen,
        max_steps=None, warmup=10):
    """One stage as `train_stage` runs it, timed: seconds per epoch, and images/s over the
    steps after `warmup` (so that a run cut short by `max_steps` still projects an epoch)."""
    freeze_features(model, frozen)
    opt, sched = make_optimizer(model, lr, max_lr, step_size_up)
    epoch_seconds, steps, timed_images, timed_start = [], 0, 0, None
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
            opt.step()
            if sched_step == "batch":
                sched.step()
            steps += 1
            if steps == warmup:
                sync(device)
                timed_start = time.perf_counter()
            elif steps > warmup:
                timed_images += len(y)
            if max_steps and steps >= max_steps:
                break
        sync(device)
        epoch_seconds.append(time.perf_counter() - start)
        if sched_step == "epoch":
            sched.step()
        if max_steps and steps >= max_steps:
            break
    rate = timed_images / (time.perf_counter() - timed_start) if timed_images else None
    return {"steps": steps, "epoch_seconds": epoch_seconds, "train_images_per_sec": rate}


def train_main(args):
    """`train`: one stage from a state_dict, scored on the holdout and val afterwards."""
    from safetensors.torch import load_file, save_file
    train_part, holdout, val, classes = datasets_for(args.data, args.holdout, args.seed)
    torch.manual_seed(args.seed)
    model = Net(len(classes))
    model.load_state_dict(load_file(args.init), strict=True)
    model.to(args.device)
    loader = DataLoader(train_part, batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=args.device.startswith("cuda"), drop_last=False)
    report = fit(model, loader, args.device, args.epochs, args.lr, args.max_lr,
                 args.step_size_up, args.sched_step, args.stage == "base", args.max_steps,
                 args.warmup)

    def score(ds):
        return evaluate(model, DataLoader(ds, batch_size=256, num_workers=args.workers),
                        args.device)

    report["holdout"] = score(holdout)
    report["val"] = score(val) if val and not args.no_val else None
    os.makedirs(args.out, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(args.out, "model.safetensors"))
    print(json.dumps(report))


def init_main(args):
    """`init`: a fresh model's state_dict, its features from torchvision's ImageNet file
    (`vgg16-397923af.pth`) when given."""
    from safetensors.torch import save_file
    torch.manual_seed(args.seed)
    model = Net(args.classes)
    if args.features:
        imagenet = torch.load(args.features, map_location="cpu", weights_only=True)
        features = {k: v for k, v in imagenet.items() if k.startswith("features.")}
        model.vgg16.load_state_dict(features, strict=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="write a fresh model's state_dict (safetensors)")
    i.add_argument("--classes", type=int, required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--features", help="torchvision's vgg16-397923af.pth for ImageNet features")
    i.add_argument("--out", required=True)
    t = sub.add_parser("train", help="train one stage from a state_dict (safetensors)")
    t.add_argument("--data", required=True)
    t.add_argument("--init", required=True, help="every tensor of the starting model")
    t.add_argument("--out", required=True)
    t.add_argument("--stage", choices=["base", "finetune"], required=True)
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--max-lr", type=float, required=True)
    t.add_argument("--step-size-up", type=int, required=True)
    t.add_argument("--sched-step", choices=["batch", "epoch"], default="batch")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--holdout", type=float, default=0.05)
    t.add_argument("--device", default="cpu")
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--no-val", action="store_true", help="score the holdout only")
    t.add_argument("--warmup", type=int, default=10, help="steps before images/s is timed")
    e = sub.add_parser("eval", help="score a state_dict (safetensors) on holdout or val")
    e.add_argument("--data", required=True)
    e.add_argument("--weights", required=True)
    e.add_argument("--split", default="holdout", choices=["holdout", "val"])
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--holdout", type=float, default=0.05)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.cmd == "train":
        return train_main(args)
    if args.cmd == "init":
        return init_main(args)

    from safetensors.torch import load_file
    _, holdout, val, classes = datasets_for(args.data, args.holdout, args.seed)
    model = Net(len(classes))
    model.load_state_dict(load_file(args.weights), strict=True)
    model.to(args.device)
    ds = holdout if args.split == "holdout" else val
    start = time.time()
    scores = evaluate(model, DataLoader(ds, batch_size=args.batch_size), args.device)
    scores["seconds"] = time.time() - start
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
