#!/usr/bin/env python3
"""How much of async's update rate SSP(s) keeps under stragglers that come and go.

A model, not a measurement: N workers, each on a core of its own; a step takes
1, or FACTOR with chance 1/N (rdmaps-train --straggler random:FACTOR). Under
SSP(s) a worker at clock c may start step c+1 only once every worker reached
c - s (docs/architecture.md "Clocks and consistency"). Prints the mean time per clock of
the slowest worker for each bound, and its ratio to fully asynchronous
workers: what the bound alone costs, before any difference in what each update
buys. Deterministic for a given seed.

    bench/ssp_model.py [--workers 4] [--factor 4] [--steps 20000] [--seed 1]
"""
import argparse
import random


def time_per_clock(bound, workers, factor, steps, seed):
    rng = random.Random(seed)
    p = 1.0 / workers
    # finish[w][k]: when worker w completed step k (clock k).
    finish = [[0.0] * (steps + 1) for _ in range(workers)]
    for k in range(1, steps + 1):
        gate = 0.0
        if bound is not None and k - 1 - bound >= 1:
            gate = max(finish[v][k - 1 - bound] for v in range(workers))
        for w in range(workers):
            start = max(finish[w][k - 1], gate)
            finish[w][k] = start + (factor if rng.random() < p else 1.0)
    return max(finish[w][steps] for w in range(workers)) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.workers < 1 or a.factor < 1 or a.steps < 1:
        ap.error("--workers and --steps must be at least 1, --factor at least 1")
    free = time_per_clock(None, a.workers, a.factor, a.steps, a.seed)
    print("| bound s | time per clock | / async |")
    print("|---:|---:|---:|")
    for s in (0, 1, 2, 3, 5, 8, 16):
        t = time_per_clock(s, a.workers, a.factor, a.steps, a.seed)
        print(f"| {s} | {t:.3f} | {t / free:.3f} |")
    print(f"| async | {free:.3f} | 1.000 |")


if __name__ == "__main__":
    main()
