"""The closing tally of scripts/test: passed, failed and skipped checks of every group, and why
each skipped one was skipped.

scripts/test leaves, per group, `NN-NAME.KIND.log` and `.rc` (a group that ran) or `.skip` (the
reason) and `.list` (the tests it holds) for a group this machine cannot run. KIND says how to
count a log: `cargo` (libtest's lines), `pytest` (its summary and -rs lines), `gpucheck` (one
check per step) or `check` (the group is one check: fmt, clippy).

Tests that cargo ignores in a full run are counted where a later group runs them (the real
subset, a tmpfs, a GPU); one that no group ran is skipped with cargo's ignore reason.
"""

import re
import sys
from collections import Counter
from pathlib import Path

CARGO_TEST = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)(?:, (.*))?$")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?)\b")
PYTEST_SKIP = re.compile(r"^SKIPPED \[(\d+)\] [^:]+(?::\d+)?: (.*)$")
GPUCHECK_STEP = re.compile(r"^\[[\d:]+\] ([\w-]+): (pass|skip|fail|timeout)\b[^(]*(?:\((.*?)\)?$)?")


class Group:
    def __init__(self, name):
        self.name = name
        self.passed = self.failed = 0
        self.skipped = Counter()  # reason -> count
        self.ran = set()  # cargo: the tests that ran here
        self.listed = set()  # a skipped group: the tests it holds
        self.ignored = {}  # cargo: test name -> ignore reason
        self.seconds = None  # a group that ran: its wall time


def cargo(group, log):
    for line in log.splitlines():
        m = CARGO_TEST.match(line)
        if not m:
            continue
        name, outcome, reason = m.groups()
        if outcome == "ignored":
            group.ignored[name] = reason or "ignored"
            continue
        group.ran.add(name)
        if outcome == "ok":
            group.passed += 1
        else:
            group.failed += 1


def pytest(group, log):
    lines = log.splitlines()
    summary = [line for line in lines if " in " in line and PYTEST_COUNT.search(line)]
    skipped = 0
    for count, what in PYTEST_COUNT.findall(summary[-1] if summary else ""):
        if what == "passed":
            group.passed += int(count)
        elif what == "skipped":
            skipped = int(count)
        else:
            group.failed += int(count)
    for line in lines:
        m = PYTEST_SKIP.match(line)
        if m:
            group.skipped[m.group(2)] += int(m.group(1))
    if skipped > sum(group.skipped.values()):
        group.skipped["reason not shown"] += skipped - sum(group.skipped.values())


def gpucheck(group, log):
    for line in log.splitlines():
        m = GPUCHECK_STEP.match(line)
        if not m:
            continue
        step, status, why = m.groups()
        if status == "pass":
            group.passed += 1
        elif status == "skip":
            group.skipped[f"gpu-check {step}: {why or 'skipped'}"] += 1
        else:
            group.failed += 1


COUNTERS = {"cargo": cargo, "pytest": pytest, "gpucheck": gpucheck, "check": lambda g, t: None}


def read_group(results, stem):
    name, kind = stem.split("-", 1)[1].rsplit(".", 1)
    group = Group(name)
    skip = results / f"{stem}.skip"
    if skip.exists():
        group.listed = {t for t in (results / f"{stem}.list").read_text().split("\n") if t}
        # a cargo group counts the tests it lists (cargo's full run counts any it missed);
        # any other group is one check
        count = len(group.listed) if kind == "cargo" else 1
        if count:
            group.skipped[skip.read_text().strip()] += count
        return group
    COUNTERS[kind](group, (results / f"{stem}.log").read_text(errors="replace"))
    seconds = results / f"{stem}.seconds"
    if seconds.exists():
        group.seconds = int(seconds.read_text().strip() or 0)
    rc = int((results / f"{stem}.rc").read_text().strip() or 1)
    if kind == "check" or (rc != 0 and group.failed == 0):
        # a group that is one check, or one that failed with no failing test (a build error)
        group.passed += rc == 0
        group.failed += rc != 0
    return group


def main():
    results = Path(sys.argv[1])
    stems = sorted({p.name.rsplit(".", 1)[0] for p in results.iterdir()})
    groups = [read_group(results, stem) for stem in stems]
    # cargo ignores some tests in a full run; a later group runs them or says why it cannot
    covered = set().union(*(g.ran | g.listed for g in groups))
    for group in groups:
        for name, reason in group.ignored.items():
            if name not in covered:
                group.skipped[f"{reason}; no group ran it"] += 1

    width = max(len(g.name) for g in groups)
    print(f"== tally\n{'group':<{width}}  passed  failed  skipped  seconds")
    totals = Counter()
    for g in groups:
        skipped = sum(g.skipped.values())
        seconds = "-" if g.seconds is None else g.seconds
        print(f"{g.name:<{width}}  {g.passed:>6}  {g.failed:>6}  {skipped:>7}  {seconds:>7}")
        totals.update(passed=g.passed, failed=g.failed, skipped=skipped)
    print(f"{'total':<{width}}  {totals['passed']:>6}  {totals['failed']:>6}  "
          f"{totals['skipped']:>7}  {sum(g.seconds or 0 for g in groups):>7}")
    for g in groups:
        for reason, count in sorted(g.skipped.items()):
            print(f"skipped in {g.name}: {count}, {reason}")
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
