#!/usr/bin/env python3
"""Stability of SGD with a fixed delay and heavy-ball momentum on a quadratic.

Each step applies the gradient of the parameters tau updates old:
    e[t+1] = e[t] + mu * (e[t] - e[t-1]) - a * e[t-tau],   a = lr * curvature.
Prints, per delay and momentum, the largest a for which every root of
    z^(tau+1) - (1+mu) z^tau + mu z^(tau-1) + a = 0
lies inside the unit circle, and that bound divided by 1/(1-mu): the step a
slow (small-curvature) direction effectively takes with momentum mu, so the
bounds compare at equal progress. Used for docs/benchmarks.md "What was tried" (issue 13).
"""
import argparse

import numpy as np


def largest_stable_step(tau, mu, grid=8000, top=4.0):
    best = 0.0
    for a in np.linspace(top / grid, top, grid):
        d = max(tau, 1) + 1  # degree: e[t+1] is z^d, e[t-k] is z^(d-1-k)
        c = np.zeros(d + 1)  # c[i]: coefficient of z^(d-i)
        c[0] = 1.0
        c[1] -= 1.0 + mu
        c[2] += mu
        c[1 + tau] += a
        if max(abs(np.roots(c))) >= 1.0:
            break
        best = a
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tau", type=int, nargs="+", default=[0, 3, 7, 15])
    p.add_argument("--mu", type=float, nargs="+", default=[0.3, 0.0, -0.2, -0.4, -0.6, -0.8])
    a = p.parse_args()
    print("tau    mu  largest a  a/(1-mu)  (the step a slow direction takes)")
    for tau in a.tau:
        for mu in a.mu:
            s = largest_stable_step(tau, mu)
            print(f"{tau:3d} {mu:5.2f} {s:10.3f} {s / (1 - mu):9.3f}")


if __name__ == "__main__":
    main()
