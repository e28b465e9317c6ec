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

import pytest

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


def test_gpu_check_killed_outright_leaves_no_process(vggtiny_bin, tmp_path):
    # SIGKILL: no handler of gpu-check runs; its reaper ends what it started. The training
    # command is a long wait, a grandchild behind a shell, so that only a kill ends it.
    folder = tmp_path / "bin"
    folder.mkdir()
    binary = folder / "vggtiny"
    binary.write_text(f'#!/bin/sh\ncase "$*" in *train-base*) {sys.executable} -c '
                      f'"import time; time.sleep(600)" "$@"; exit;; esac\n'
                      f'exec "{vggtiny_bin}" "$@"\n')
    binary.chmod(0o755)
    proc = gpu_check(tmp_path, "--bin", binary, "--only", "full-scale")
    deadline = time.monotonic() + 60
    while not any("train-base" in p for p in processes_naming(str(tmp_path))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while processes_naming(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(str(tmp_path)) == []


def test_a_binary_that_cannot_start_is_named_in_one_line(tmp_path):
    # what the loader prints when a library is missing, from a stand-in binary
    folder = tmp_path / "bin"
    folder.mkdir()
    binary = folder / "vggtiny"
    binary.write_text("#!/bin/sh\necho 'vggtiny: error while loading shared libraries: "
                      "libmissing.so.1: cannot open shared object file' >&2\nexit 127\n")
    binary.chmod(0o755)
    proc = gpu_check(tmp_path, "--bin", binary)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "stopping: every other step needs the binary to start" in stdout
    step, = report(tmp_path)["steps"]
    assert step["status"] == "fail", step
    assert "libmissing.so.1" in step["loader"] and "cannot start here" in step["reason"], step


def test_a_library_the_loader_cannot_find_is_named_in_one_line(tmp_path):
    # a real executable whose shared library is gone, as a binary built elsewhere finds a
    # machine: ldd lists it as "not found"
    import shutil
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the stand-in executable")
    folder = tmp_path / "bin"
    folder.mkdir()
    (tmp_path / "gone.c").write_text("int gone(void) { return 0; }\n")
    (tmp_path / "main.c").write_text("int gone(void);\nint main(void) { return gone(); }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", tmp_path / "libgone.so", tmp_path / "gone.c"],
                   check=True)
    subprocess.run([cc, "-o", folder / "vggtiny", tmp_path / "main.c", "-L", tmp_path,
                    "-lgone"], check=True)
    (tmp_path / "libgone.so").unlink()
    proc = gpu_check(tmp_path, "--bin", folder / "vggtiny")
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, stdout
    step, = report(tmp_path)["steps"]
    assert step["status"] == "fail", step
    assert step["loader"] == "libgone.so => not found", step


def test_a_failing_throughput_row_keeps_the_others(vggtiny_bin, tmp_path):
    # the binary fails at one image size only
    folder = tmp_path / "bin"
    folder.mkdir()
    binary = folder / "vggtiny"
    binary.write_text(f'#!/bin/sh\ncase "$*" in *"--image-size 96"*) echo "out of memory" >&2; '
                      f'exit 1;; esac\nexec "{vggtiny_bin}" "$@"\n')
    binary.chmod(0o755)
    proc = gpu_check(tmp_path, "--bin", binary, "--only", "throughput")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stdout + stderr
    step, = report(tmp_path)["steps"]
    assert step["status"] == "fail" and "1 row(s) failed" in step["reason"], step
    failed = [r for r in step["bench"] if "failed" in r]
    assert [(r["image_size"], r["amp"]) for r in failed] == [(96, "off")], step["bench"]
    assert "out of memory" in failed[0]["failed"]
    rows = [r for r in step["bench"] if r["image_size"] == 64 and r["amp"] == "off"]
    assert rows and rows[0]["stage1_images_per_sec"] > 0
    assert any("images_per_sec" in r for r in step["reference"])
    # stage 2 at the largest size is measured on the reference's side too
    assert any(r["image_size"] == 96 and r["workload"] == "finetune" and "images_per_sec" in r
               for r in step["reference"]), step["reference"]
    assert "failed: " in (tmp_path / "out" / "gpu-check.md").read_text()


def load_gpu_check():
    """scripts/gpu-check as a module (its file has no .py suffix)."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(GPU_CHECK))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(module)
    return module


def test_the_cuda_tests_at_their_cap_keep_their_output_and_adams_figure(tmp_path):
    # the CUDA tests' step on a stand-in harness: the Adam test alone first, then the others,
    # cut by the cap while they run; cuda-tests.log and the figures keep what both printed
    import torch
    from types import SimpleNamespace
    gc = load_gpu_check()
    harness = tmp_path / "integration"
    harness.write_text(f"""#!{sys.executable}
import sys, time
names = ["{gc.ADAM_TEST}"] + [f"cuda::cuda_t{{i}}" for i in range(8)]
if "--list" in sys.argv:
    print("\\n".join(f"{{n}}: test" for n in names))
elif "--exact" in sys.argv:
    print("test {gc.ADAM_TEST} ... ok")
    print("adam on cuda: max ulp difference 0 over 1234 values")
else:
    print("test cuda::cuda_t0 ... ok")
    print("test cuda::cuda_t1 ... FAILED", flush=True)
    time.sleep(60)
""")
    harness.chmod(0o755)
    args = SimpleNamespace(dry_run=False, bin=sys.executable, tests=harness)
    ctx = gc.Context(args, torch, tmp_path)
    try:
        ctx.result = {"device": None, "dry_run": False, "started": "", "machine": "", "caps": {},
                      "timed_out": [], "steps": []}
        ctx.entry = {}
        ctx.deadline = time.monotonic() + 3
        fig = {}
        started = time.monotonic()
        try:
            gc.step_cuda_tests(ctx, fig)
            raise AssertionError("no timeout")
        except gc.Timeout:
            pass
        assert time.monotonic() - started < 20
        assert fig["tests"] == 9 and fig["passed"] == 2, fig
        assert fig["failed"] == ["cuda::cuda_t1"], fig
        assert (fig["adam_max_ulp"], fig["adam_values"]) == (0, 1234), fig
        log = (tmp_path / "cuda-tests.log").read_text()
        assert "adam on cuda" in log and "cuda::cuda_t0" in log
        assert ctx.entry["commands"][-1]["exit"] == "timeout"
    finally:
        ctx.close()


def test_a_command_at_its_cap_is_gone_whole_before_the_next_starts(tmp_path):
    # a shell whose child holds 1 GiB and writes to a file, not to gpu-check's pipes (as
    # `wrapped` does): once killed, the shell is collected at once while the child takes
    # some 60 ms to release its memory, a GPU's memory as well on a GPU
    import torch
    from types import SimpleNamespace
    gc = load_gpu_check()
    args = SimpleNamespace(dry_run=True, bin=sys.executable, tests=sys.executable)
    ctx = gc.Context(args, torch, tmp_path)
    pid_file = tmp_path / "child.pid"
    try:
        ctx.result = {"device": None, "dry_run": True, "started": "", "machine": "", "caps": {},
                      "timed_out": [], "steps": []}
        ctx.entry = {}
        ctx.deadline = time.monotonic() + 5
        child = ("import os, time; print(os.getpid(), flush=True); "
                 "b = bytes(range(256)) * (4 << 20); time.sleep(60)")
        try:
            ctx.run(["sh", "-c", f'"{sys.executable}" -c "{child}" >"{pid_file}" 2>&1; echo'])
            raise AssertionError("no timeout")
        except gc.Timeout:
            pass
        pid = int(pid_file.read_text())
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        assert state in ("Z", "gone"), f"the killed child is still in state {state}"
    finally:
        ctx.close()


def test_a_process_whose_main_thread_exited_first_still_counts():
    # its main thread gone (shown as a zombie) while another thread still runs, as threads
    # end in no set order after SIGKILL: the process holds what it held
    gc = load_gpu_check()
    program = ("import ctypes, threading, time\n"
               "threading.Thread(target=time.sleep, args=(60,)).start()\n"
               "ctypes.CDLL(None).pthread_exit(None)\n")
    proc = subprocess.Popen([sys.executable, "-c", program], start_new_session=True)
    try:
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 10
        while gc.stat_fields(stat)[0] != "Z":
            assert time.monotonic() < deadline, "the main thread did not exit"
            time.sleep(0.01)
        assert gc.group_members(proc.pid) == [proc.pid]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert gc.group_members(proc.pid) == []


def test_bf16_is_left_out_on_a_gpu_without_bf16_tensor_cores(tmp_path):
    from types import SimpleNamespace
    gc = load_gpu_check()
    args = SimpleNamespace(parity_seeds=1)
    t4 = SimpleNamespace(capability=(7, 5), dry=False, args=args)
    row = gc.bench_row(t4, tmp_path, 64, "bf16", (64, 1, 8))
    assert row["skipped"] == "no bf16 tensor cores (compute capability 7.5)", row
    runs = [name for name, _, _ in gc.parity_plan(t4)]
    assert "vggtiny_fp16" in runs and "vggtiny_bf16" not in runs, runs
    h200 = SimpleNamespace(capability=(9, 0), dry=False, args=args)
    assert "vggtiny_bf16" in [name for name, _, _ in gc.parity_plan(h200)]


def test_ratios_set_each_size_against_the_reference_at_that_size():
    gc = load_gpu_check()
    ours = [{"image_size": 64, "amp": "off", "stage1_images_per_sec": 100.0,
             "stage2_images_per_sec": 50.0},
            {"image_size": 224, "amp": "off", "stage1_images_per_sec": 10.0,
             "stage2_images_per_sec": 8.0}]
    # the 64 rows of earlier reports name no size
    ref = [{"workers": 0, "workload": "train-base", "amp": "off", "images_per_sec": 20.0},
           {"workers": 0, "workload": "finetune", "amp": "off", "images_per_sec": 25.0},
           {"workers": 16, "workload": "finetune", "amp": "off", "image_size": 224,
            "images_per_sec": 4.0}]
    fig = {"bench": ours, "reference": ref}
    gc.throughput_ratios(fig)
    assert fig["ratios"] == {"stage1_fp32_vs_ref_fp32_0_workers": 5.0,
                             "stage2_fp32_vs_ref_fp32_0_workers": 2.0,
                             "stage2_fp32_224px_vs_ref_fp32_16_workers": 2.0}
