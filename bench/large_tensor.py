"""A tensor past 4 GiB through a real server: every float of a push applied and
pulled back exactly. Byte offsets past 2^32 are where 32-bit arithmetic in a
data path breaks; a model of that size cannot run in CI (four copies of it:
the worker's gradient and output, its receive region, the server's
parameters; over tcp a fifth, the server's copy it sends write-backs from),
so this check runs by hand and on bigger machines.

    PYTHONPATH=build/python /usr/bin/python3 bench/large_tensor.py --transport shm

Prints one JSON line (phase times, floats checked, floats wrong); exits 1 when
any float is wrong.
"""

import argparse
import json
import sys
import threading
import time

import numpy as np

import rdmaps

CHUNK = 1 << 26  # floats per pass when filling and checking: no temporary of the whole size


def chunks(n):
    for s in range(0, n, CHUNK):
        yield s, min(n, s + CHUNK)


def available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", choices=["shm", "tcp"], default="shm")
    ap.add_argument("--floats", type=int, default=1_100_000_000,
                    help="size of the large tensor (default 1.1 G floats: 4.4 GB, past 2^32 bytes)")
    args = ap.parse_args()
    if args.floats <= 0:
        sys.exit(f"large_tensor.py: --floats {args.floats}: give a positive count")
    # The server admits the worker where its own part fits, and the worker's part could then get this one process
    # killed: counted together, here.
    copies = 5 if args.transport == "tcp" else 4
    need = copies * 4 * args.floats
    have = available_bytes()
    if have is not None and have < need:
        sys.exit(f"large_tensor.py: --floats {args.floats} needs about {need / 1e9:.1f} GB ({copies} copies over "
                 f"{args.transport}), MemAvailable is {have / 1e9:.1f} GB")
    lr = 0.5  # a power of two: -lr * g is exact in float32
    took = {}
    start = time.perf_counter()
    server = rdmaps.Server("127.0.0.1:0", workers=1, transport=args.transport, rule="sgd", lr=lr)
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    worker = rdmaps.Worker(server.address, 0, transport=args.transport, rule="sgd", lr=lr, timeout=600)
    worker.declare("head", 8)  # the large tensor starts past offset 0 of the table
    worker.declare("large", args.floats)
    worker.connect()
    took["connect_s"] = time.perf_counter() - start

    g = np.empty(args.floats, dtype=np.float32)
    for s, e in chunks(args.floats):  # 1..997 by position: a float landing elsewhere shows
        g[s:e] = (np.arange(s, e, dtype=np.int64) % 997 + 1).astype(np.float32)
    t = time.perf_counter()
    worker.push("head", np.ones(8, dtype=np.float32))
    worker.push("large", g)
    worker.clock()
    took["push_s"] = time.perf_counter() - t

    out = np.full(args.floats, np.nan, dtype=np.float32)
    t = time.perf_counter()
    worker.pull("large", out)
    took["pull_s"] = time.perf_counter() - t

    wrong, first = 0, None
    for s, e in chunks(args.floats):
        bad = np.flatnonzero(out[s:e] != np.float32(-lr) * g[s:e])
        if bad.size and first is None:
            first = int(s + bad[0])
        wrong += int(bad.size)
    head = np.empty(8, dtype=np.float32)
    worker.pull("head", head)
    wrong += int(np.count_nonzero(head != np.float32(-lr)))
    worker.close()
    server.stop()
    serving.join(timeout=60)
    # The bound for connect_s: connecting allocates and zeroes the server's
    # parameters and the worker's receive region, twice the tensor's bytes
    # of fresh memory: it cannot take less than first-touching as much here.
    del g, out
    t = time.perf_counter()
    fresh = np.empty(2 * args.floats, dtype=np.float32)
    fresh.fill(1.0)
    took["first_touch_bound_s"] = time.perf_counter() - t
    del fresh
    report = {"transport": args.transport, "floats": args.floats, "bytes": 4 * args.floats,
              "wrong": wrong, "first_wrong": first, **{k: round(v, 2) for k, v in took.items()},
              # below ~10 ms (small runs) the ratio says nothing
              "connect_vs_bound": round(took["connect_s"] / took["first_touch_bound_s"], 2)
              if took["first_touch_bound_s"] >= 0.01 else None}
    print(json.dumps(report), flush=True)
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
