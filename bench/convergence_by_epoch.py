#!/usr/bin/env python3
"""How the gap of bench/convergence.sh develops over training: for each cell
of one rule, the mean over seeds of (its test accuracy − sequential SGD's of
the same seed) at every whole epoch and at the end, ± the standard error,
from the metrics.csv (OUT/runs/<cell>/metrics.csv) of the runs the table
has (OUT/results.jsonl, diverged runs left out: an earlier invocation's
curves in the same OUT are not this one's). A gap that shrinks
epoch by epoch is a run that trains slower; one that stays is a run that
settles worse (docs/benchmarks.md "Session 23: the gap over training").

    bench/convergence_by_epoch.py OUT [RULE]   (RULE: off, constant, adaptive [adaptive])
"""
import csv
import json
import os
import sys

from convergence_table import RULES, mean_and_error

RULE_NAMES = [rule for rule, _ in RULES]


def curve(path):
    """[(epoch, accuracy %)] of one run, in order; the last is its final test."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"convergence_by_epoch: cannot read {path}: {e.strerror}")
    points = []
    for number, row in enumerate(rows, 2):
        try:
            points.append((float(row["epoch"]), 100 * float(row["test_accuracy"])))
        except (KeyError, TypeError, ValueError):
            sys.exit(f"convergence_by_epoch: {path}:{number}: no epoch and test_accuracy")
    if not points:
        sys.exit(f"convergence_by_epoch: {path}: no evaluation")
    return points


def at_epoch(points, epoch):
    """The evaluation nearest whole epoch `epoch` (virtual runs test every half epoch)."""
    e, acc = min(points[:-1] or points, key=lambda p: abs(p[0] - epoch))
    return acc if abs(e - epoch) <= 0.1 else None


def main(out, rule):
    runs_dir = os.path.join(out, "runs")
    results = os.path.join(out, "results.jsonl")
    try:
        with open(results) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        sys.exit(f"convergence_by_epoch: cannot read {results}: {e.strerror}")
    except ValueError as e:
        sys.exit(f"convergence_by_epoch: {results}: not one JSON object per line ({e})")
    curves = {}  # (n, delay, rule) -> {seed: points}
    for r in runs:
        if r.get("diverged"):  # its metrics.csv, if any, is an earlier invocation's
            continue
        n, delay, r_rule, seed = r["n"], r["delay"], r["rule"], r["seed"]
        name = f"n{n}-{delay.replace(':', '_')}-{r_rule}-s{seed}"  # bench/convergence.sh's run_dir
        curves.setdefault((n, delay, r_rule), {})[seed] = curve(os.path.join(runs_dir, name, "metrics.csv"))
    seq = curves.get((1, "round-robin", "off"))
    if not seq:
        sys.exit(f"convergence_by_epoch: no sequential SGD run (n1-round-robin-off-s*) in {runs_dir}")
    cells = sorted((k for k in curves if k[0] > 1 and k[2] == rule), key=lambda k: (k[1] != "round-robin", k[0], k[1]))
    if not cells:
        sys.exit(f"convergence_by_epoch: no run of rule '{rule}' with more than one worker in {runs_dir}")
    epochs = int(round(max(p[-1][0] for p in seq.values())))
    print(f"{rule} − sequential SGD, same seed, mean ± standard error over seeds (accuracy points)")
    print()
    print("| epoch | " + " | ".join(f"N = {n}, {delay}" for n, delay, _ in cells) + " |")
    print("|---:|" + "---:|" * len(cells))
    for epoch in list(range(1, epochs)) + ["final"]:  # the last epoch's test is the final one
        row = []
        for cell in cells:
            diffs = []
            for seed, points in curves[cell].items():
                if seed not in seq:
                    continue
                mine = points[-1][1] if epoch == "final" else at_epoch(points, epoch)
                theirs = seq[seed][-1][1] if epoch == "final" else at_epoch(seq[seed], epoch)
                if mine is not None and theirs is not None:
                    diffs.append(mine - theirs)
            row.append(mean_and_error(diffs))
        print(f"| {epoch} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in RULE_NAMES):
        sys.exit("usage: bench/convergence_by_epoch.py OUT [off|constant|adaptive]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "adaptive")
