"""How long the pull in DistributedOptimizer.step() takes, with the parameters
in one buffer (pulls land in them) or each in its own (copied out of the
receive region). Run with rdmaps.launch -n 2: rank 0 serves, rank 1 pulls.

    python3 -m rdmaps.launch -n 2 bench/torch_pull.py --flat-parameters on
"""

import argparse
import json
import os
import sys
import time

import torch

import rdmaps.torch as rps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from torch_fashion_mnist import model_for  # noqa: E402 - the example's model, measured as it trains


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flat-parameters", choices=["on", "off"], required=True)
    ap.add_argument("--hidden", default="256,128", help="hidden layer sizes of the 784-...-10 MLP")
    ap.add_argument("--pulls", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rps.init()  # rank 0 serves here and exits
    model = model_for([int(h) for h in args.hidden.split(",") if h])
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model.named_parameters(),
                                   staleness=0, flat_parameters=args.flat_parameters == "on")
    rps.broadcast_parameters(model.state_dict())
    for _ in range(100):  # warm-up
        opt._load_parameters()
    before = opt.stats()["pull_bytes_in_place"]
    took = []
    for _ in range(args.pulls):
        start = time.perf_counter()
        opt._load_parameters()  # the pull step() ends with
        took.append(time.perf_counter() - start)
    took.sort()
    at = lambda q: round(took[int(q * (len(took) - 1))] * 1e6, 1)  # noqa: E731
    print("result " + json.dumps({
        "flat_parameters": args.flat_parameters, "bytes": 4 * sum(p.numel() for p in model.parameters()),
        "pulls": args.pulls, "p10_us": at(0.1), "p50_us": at(0.5), "p90_us": at(0.9),
        "in_place_per_pull": (opt.stats()["pull_bytes_in_place"] - before) // args.pulls}), flush=True)


if __name__ == "__main__":
    main()
