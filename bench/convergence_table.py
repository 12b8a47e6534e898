#!/usr/bin/env python3
"""The table of bench/convergence.sh from its results.jsonl (one JSON line per
run, with n, delay, rule, seed and final_test_accuracy or diverged), and
below it the MINIBATCH cells (delay minibatch:LR) where there are any.

Cells are the mean final accuracy (min–max over the seeds). The gap to
sequential SGD also carries ± the standard error of the per-seed differences
(a seed fixes the initial weights), because a single final evaluation at a
constant rate scatters by most of a point from seed to seed
(docs/benchmarks.md "Session 22: ten seeds").

    bench/convergence_table.py OUT/results.jsonl
"""
import json
import statistics
import sys

RULES = [("off", "ASGD"), ("constant", "DC-ASGD-c"), ("adaptive", "DC-ASGD-a")]


def load(path):
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        sys.exit(f"convergence_table: cannot read {path}: {e.strerror}")
    runs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except ValueError as e:
            sys.exit(f"convergence_table: {path}:{number}: not JSON ({e})")
        if not isinstance(run, dict):
            sys.exit(f"convergence_table: {path}:{number}: not a run of convergence.sh (not an object)")
        missing = [field for field in ("n", "delay", "rule", "seed") if field not in run]
        if missing or not (run.get("diverged") or "final_test_accuracy" in run):
            sys.exit(f"convergence_table: {path}:{number}: not a run of convergence.sh"
                     f" (no {', '.join(missing or ['final_test_accuracy'])})")
        runs.append(run)
    return runs


def accuracy(run):
    return None if run.get("diverged") else 100 * run["final_test_accuracy"]


def cell(rs):
    if not rs:
        return "—"  # a rule RULES left out
    ok = [a for a in map(accuracy, rs) if a is not None]
    div = len(rs) - len(ok)
    if not ok:
        return f"diverged {div}/{len(rs)}"
    spread = f"{min(ok):.2f}–{max(ok):.2f}" if len(ok) > 1 else f"{ok[0]:.2f}"
    return f"{statistics.mean(ok):.2f} ({spread})" + (f", diverged {div}/{len(rs)}" if div else "")


def mean(rs):
    accs = [accuracy(r) for r in rs]
    return statistics.mean(accs) if accs and None not in accs else None


def difference(x, y):
    return f"{x - y:+.2f}" if x is not None and y is not None else "—"


def paired_gap(rs, seq_by_seed):
    """Mean of (run − sequential SGD of the same seed), ± its standard error."""
    if not rs or any(r.get("diverged") or r["seed"] not in seq_by_seed for r in rs):
        return "—"
    return mean_and_error([accuracy(r) - seq_by_seed[r["seed"]] for r in rs])


def mean_and_error(diffs):
    """'+m.mm ± s.ss': the mean of paired differences and its standard error ("—" for none)."""
    if not diffs:
        return "—"
    gap = f"{statistics.mean(diffs):+.2f}"
    return gap + (f" ± {statistics.stdev(diffs) / len(diffs) ** 0.5:.2f}" if len(diffs) > 1 else "")


def main(path):
    runs = load(path)
    seq_runs = [r for r in runs if r["n"] == 1 and not r.get("diverged")]
    seq_by_seed = {r["seed"]: accuracy(r) for r in seq_runs}
    seq = list(seq_by_seed.values())
    if seq:
        print(f"sequential SGD (1 worker): {statistics.mean(seq):.2f} % mean over {len(seq)} seeds"
              + (f" ({min(seq):.2f}–{max(seq):.2f})" if len(seq) > 1 else ""))
    else:
        print("sequential SGD (1 worker): no run")
    print()
    print("| N | delay | staleness p50 / max | " + " | ".join(name for _, name in RULES)
          + " | DC-a − seq | DC-a − ASGD | DC-a − DC-c |")
    print("|---:|---|---:|" + "---:|" * (len(RULES) + 3))
    keys = sorted({(r["n"], r["delay"]) for r in runs if r["n"] > 1 and not is_minibatch(r)},
                  key=lambda k: (k[1] != "round-robin", k[0], k[1]))
    for n, delay in keys:
        by = {rule: [r for r in runs if r["n"] == n and r["delay"] == delay and r["rule"] == rule] for rule, _ in RULES}
        ok = [r for rs in by.values() for r in rs if not r.get("diverged")]
        tau = f"{statistics.median(r['staleness_p50'] for r in ok):.0f} / {max(r['staleness_max'] for r in ok)}" if ok else "—"
        a, s, c = mean(by["adaptive"]), mean(by["off"]), mean(by["constant"])
        print(f"| {n} | {delay} | {tau} | " + " | ".join(cell(by[rule]) for rule, _ in RULES)
              + f" | {paired_gap(by['adaptive'], seq_by_seed)} | {difference(a, s)} | {difference(a, c)} |")
    minibatch_table(runs, seq_by_seed)


def is_minibatch(run):
    return run["delay"].startswith("minibatch:")


def minibatch_table(runs, seq_by_seed):
    """N workers without staleness (MINIBATCH cells) beside DC-ASGD-a with N round-robin workers."""
    cells = sorted({(r["n"], r["delay"]) for r in runs if is_minibatch(r)},
                   key=lambda k: (k[0], float(k[1].split(":", 1)[1])))
    if not cells:
        return
    print()
    print("Synchronous minibatch SGD of N workers (one worker, N times the batch, at the learning rate named)"
          " against sequential SGD and DC-ASGD-a with N round-robin workers, same seeds:")
    print()
    print("| N | lr | minibatch SGD | − seq | DC-a − minibatch |")
    print("|---:|---:|---:|---:|---:|")
    for n, delay in cells:
        rs = [r for r in runs if r["n"] == n and r["delay"] == delay]
        by_seed = {r["seed"]: accuracy(r) for r in rs if not r.get("diverged")}
        adaptive = [r for r in runs if r["n"] == n and r["delay"] == "round-robin" and r["rule"] == "adaptive"]
        print(f"| {n} | {delay.split(':', 1)[1]} | {cell(rs)} | {paired_gap(rs, seq_by_seed)}"
              f" | {paired_gap(adaptive, by_seed)} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench/convergence_table.py OUT/results.jsonl")
    main(sys.argv[1])
