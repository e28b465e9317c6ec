"""Runs the same workloads through the PyTorch reference (0 workers and one worker per core) and
through `vggtiny bench`, interleaved in one run on the same data and device, and prints a
markdown table of throughputs and ratios."""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ["decode", "augment", "train-base", "finetune", "eval"]
KEYS = {"decode": "decode_images_per_sec", "augment": "augment_images_per_sec",
        "train-base": "train_base_images_per_sec", "finetune": "finetune_images_per_sec",
        "eval": "eval_images_per_sec"}
LABELS = {"decode": "cold decode (ref: PIL, 1 process)",
          "augment": "augmented batches (ref: full DataLoader pipeline)",
          "train-base": "stage-1 training", "finetune": "stage-2 training",
          "eval": "eval forward"}


def run_json(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "vggtiny"))
    args = p.parse_args()

    cores = os.cpu_count() or 1
    common = ["--data", args.data, "--images", str(args.images), "--steps", str(args.steps),
              "--device", args.device]
    ref = [sys.executable, str(ROOT / "reference" / "bench.py"), *common]
    results = {}
    start = time.time()
    for w in WORKLOADS:
        row = {}
        row["ref0"] = run_json([*ref, "--workload", w, "--workers", "0"])["images_per_sec"]
        ours = run_json([args.binary, "bench", *common, "--only", w, "--json"])
        row["ours"] = ours[KEYS[w]]
        row["report"] = ours
        if w != "decode":
            row["refN"] = run_json([*ref, "--workload", w, "--workers", str(cores)])[
                "images_per_sec"]
        results[w] = row
        print(f"measured {w}", file=sys.stderr)

    print(f"Machine: {platform.machine()}, {cores} cores, {platform.platform()}; "
          f"device {args.device}; {args.images} images from {args.data}, batch 64, "
          f"{args.steps} timed steps per training stage. Run took {time.time() - start:.0f}s.\n")
    print(f"| workload | PyTorch, 0 workers | PyTorch, {cores} workers | vggtiny | "
          f"vggtiny / 0 workers | vggtiny / {cores} workers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for w in WORKLOADS:
        r = results[w]
        refn = f"{r['refN']:.1f}" if "refN" in r else "-"
        ratio_n = f"{r['ours'] / r['refN']:.2f}x" if "refN" in r else "-"
        print(f"| {LABELS[w]} | {r['ref0']:.1f} | {refn} | {r['ours']:.1f} | "
              f"{r['ours'] / r['ref0']:.2f}x | {ratio_n} |")
    print("\nimages/s. Epoch time of vggtiny relative to the reference (lower is better):")
    for w in ["train-base", "finetune"]:
        r = results[w]
        wait = r["report"][w.replace("-", "_").replace("train_base", "train_base") + "_data_wait"]
        print(f"- {LABELS[w]}: {r['ref0'] / r['ours']:.2f}x of 0 workers, "
              f"{r['refN'] / r['ours']:.2f}x of {cores} workers; "
              f"vggtiny waited for data {100 * wait:.1f}% of its step time")
    dec = results["decode"]["report"]
    print(f"- warm start (scan, map cache, model, first batch) for {dec['images']} images: "
          f"{dec['warm_start_seconds']:.3f}s")
    peak = max(r["report"]["peak_host_mb"] for r in results.values())
    print(f"- vggtiny peak host memory over the workloads: {peak:.0f} MiB")
    dev = [r["report"]["peak_device_mb"] for r in results.values() if r["report"]["peak_device_mb"]]
    if dev:
        print(f"- vggtiny device memory in use, at most: {max(dev):.0f} MiB")


if __name__ == "__main__":
    main()
