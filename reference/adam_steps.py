"""PyTorch's default Adam over a case that vggtiny's tests write, for them to compare with
their own steps bit for bit:

    python reference/adam_steps.py CASE OUT DEVICE

CASE (safetensors) holds the parameters' starting values (`param.<i>`), each step's gradients
(`grad.<step>.<i>`) and each step's learning rate and beta1 (`lr`, `beta1`: float64, one per
step). The parameters move to DEVICE and `torch.optim.Adam` steps them as a training script
would, its implementation left to PyTorch's default for that device (single-tensor on a CPU,
foreach on CUDA); OUT receives the parameters after the last step under the same names.
"""

import sys

import torch
from safetensors.torch import load_file, save_file


def main(case_file, out_file, device):
    case = load_file(case_file)
    count = sum(name.startswith("param.") for name in case)
    params = [case[f"param.{i}"].to(device).requires_grad_() for i in range(count)]
    lrs, beta1s = case["lr"].tolist(), case["beta1"].tolist()
    adam = torch.optim.Adam(params, lr=lrs[0], betas=(beta1s[0], 0.999), eps=1e-8)
    for step, (lr, beta1) in enumerate(zip(lrs, beta1s)):
        for group in adam.param_groups:
            group["lr"], group["betas"] = lr, (beta1, 0.999)
        for i, p in enumerate(params):
            p.grad = case[f"grad.{step}.{i}"].to(device)
        adam.step()
    save_file({f"param.{i}": p.detach().cpu() for i, p in enumerate(params)}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])
