"""scripts/gpu-check's own safeguards, on its dry run: a step that reaches its time cap keeps
the figures it had and names the command that ran out of time; no process it started outlives
a cap or gpu-check itself; a python without torch, or another torch than the binary's, is told
in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

GPU_CHECK = ROOT / "scripts" / "gpu-check"


def wrapped(vggtiny_bin, folder):
    """vggtiny behind a shell that waits for it and passes its output on afterwards, as a test
    harness runs it: a kill of the shell alone would leave vggtiny running (writing to files,
    it does not die of a closed pipe)."""
    folder.mkdir()
    wrapper = folder / "vggtiny"
    wrapper.write_text(f'#!/bin/sh\n"{vggtiny_bin}" "$@" >"$0.out" 2>"$0.err"\nstatus=$?\n'
                       'cat "$0.out"; cat "$0.err" >&2\nexit $status\n')
    wrapper.chmod(0o755)
    return wrapper


def processes_naming(marker):
    """The command lines of the processes whose command line holds `marker`, gpu-check's
    own left out."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if marker in text and str(GPU_CHECK) not in text:
            found.append(text)
    return found


def gpu_check(tmp_path, *args):
    """gpu-check's dry run with its work folder under `tmp_path` (TMPDIR)."""
    cmd = [sys.executable, GPU_CHECK, "--dry-run", "--out", tmp_path / "out", *args]
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.Popen([str(c) for c in cmd], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def report(tmp_path):
    return json.loads((tmp_path / "out" / "gpu-check.json").read_text())


def test_a_step_at_its_cap_keeps_its_figures_and_ends_its_processes(vggtiny_bin, tmp_path):
    # full-scale capped at 3 s: after its synthetic data (under a second), inside its training
    proc = gpu_check(tmp_path, "--bin", wrapped(vggtiny_bin, tmp_path / "bin"), "--only",
                     "full-scale", "--cap", "full-scale=3")
    at_cap = None
    for line in proc.stdout:
        if "full-scale: timeout in" in line:
            # what a next step would start with: nothing of this one may still run
            at_cap = processes_naming(str(tmp_path))
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert at_cap == [], stdout + stderr
    assert processes_naming(str(tmp_path)) == []
    assert proc.returncode == 1, stderr
    assert "warning: no" in stderr and "build.json" in stderr
    result = report(tmp_path)
    step, = result["steps"]
    assert step["status"] == "timeout" and step["cap"] == 3
    assert step["images"] == 200 and step["synth_seconds"] > 0
    commands = step["commands"]
    assert commands[0]["command"] == "vggtiny synth" and commands[0]["exit"] == 0
    assert commands[-1]["exit"] == "timeout"
    assert step["timed_out"] == commands[-1]["command"]
    assert result["timed_out"] == [f"full-scale: {step['timed_out']}"]


def test_a_signal_to_gpu_check_ends_what_it_started(vggtiny_bin, tmp_path):
    proc = gpu_check(tmp_path, "--bin", wrapped(vggtiny_bin, tmp_path / "bin"), "--only",
                     "full-scale")
    deadline = time.monotonic() + 60
    while not any("train-base" in p for p in processes_naming(str(tmp_path))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=30)
    assert processes_naming(str(tmp_path)) == []
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped: gpu-check got SIGTERM" in stdout
    assert report(tmp_path)["steps"][0]["status"] == "interrupted"


def one_line_refusal(proc):
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    return stderr


def test_a_python_without_torch_is_told_which_python_to_use(tmp_path):
    # -S: without site-packages, this python has no torch
    proc = subprocess.Popen([sys.executable, "-S", str(GPU_CHECK), "--dry-run", "--out",
                             str(tmp_path)], text=True, stderr=subprocess.PIPE)
    stderr = one_line_refusal(proc)
    assert "cannot import torch" in stderr and "python" in stderr.split(";")[1]


def test_a_binary_built_against_another_torch_is_refused(vggtiny_bin, tmp_path):
    wrapper = wrapped(vggtiny_bin, tmp_path / "bin")
    (wrapper.parent / "build.json").write_text(json.dumps({"torch": "1.0.0+cu130"}))
    stderr = one_line_refusal(gpu_check(tmp_path, "--bin", wrapper))
    assert "built against torch 1.0.0+cu130" in stderr and "build.json" in stderr
