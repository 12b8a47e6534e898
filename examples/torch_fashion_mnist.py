#!/usr/bin/python3
"""Trains an MLP on Fashion-MNIST with rdmaps.torch (or, for comparison, with
torch.distributed gloo all-reduce DDP).

    torchrun --nproc_per_node 3 examples/torch_fashion_mnist.py          # 1 server + 2 workers
    torchrun --nproc_per_node 2 examples/torch_fashion_mnist.py --backend gloo
    python3 -m rdmaps.launch -n 3 examples/torch_fashion_mnist.py        # where torchrun fails (Debian 12)
    python3 examples/torch_fashion_mnist.py --backend local              # one process, no communication

Each worker prints one line 'result {json}' (samples/s, steps, accuracy on
worker 0); see docs/pytorch.md.
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_idx(path):
    """An IDX file (optionally .gz) as a numpy array; errors name the file."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.exit(f"torch_fashion_mnist: cannot read {path}: {e.strerror or e} "
                 "(apt-get install dataset-fashion-mnist, or pass --data DIR)")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        sys.exit(f"torch_fashion_mnist: {path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != math.prod(shape):
        sys.exit(f"torch_fashion_mnist: {path} holds {body.size} bytes, its header says {math.prod(shape)}")
    return body.reshape(shape)


def load(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if len(x) != len(y):
        sys.exit(f"torch_fashion_mnist: {len(x)} {split} images but {len(y)} labels in {data_dir}")
    return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def model_for(hidden):
    sizes = [784] + hidden + [10]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def staleness_bound(text):
    """--staleness: a whole number of clocks, or 'inf' (fully asynchronous)."""
    if text == "inf":
        return math.inf
    try:
        bound = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of clocks or inf") from None
    if bound < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is negative: 0 is bulk-synchronous")
    return bound


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["rdmaps", "gloo", "local"], default="rdmaps",
                    help="local: one process, no communication (the compute bound)")
    ap.add_argument("--epochs", type=float, default=4.0, help="passes over the training set, all workers together")
    ap.add_argument("--batch", type=int, default=32, help="samples per worker step")
    ap.add_argument("--lr", type=float, default=0.15)
    ap.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (the servers' momentum rule; not with --dc)")
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                    help="learning rate over the run (a torch scheduler; rdmaps pushes carry the rate)")
    ap.add_argument("--hidden", default="256,128", help="hidden layer sizes")
    ap.add_argument("--staleness", type=staleness_bound, default=2, help="SSP bound, or 'inf' (rdmaps)")
    ap.add_argument("--dc", choices=["none", "adaptive", "constant"], default="adaptive", help="delay compensation")
    ap.add_argument("--lambda", dest="lambda_", type=float, default=None, help="DC-ASGD lambda0 / lambda")
    ap.add_argument("--data", default=os.environ.get("RDMAPS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--flat-parameters", choices=["on", "off"], default="on",
                    help="rdmaps: the parameters in one buffer, so that pulls land in them with no copy")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--expect-accuracy", type=float, default=None,
                    help="worker 0 exits with status 3 below this test accuracy (0..1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",") if h]

    if args.backend == "rdmaps":
        import rdmaps.torch as rps
        rps.init()  # server ranks serve here and exit
        rank, workers = rps.rank(), rps.size()
    elif args.backend == "gloo":
        torch.distributed.init_process_group("gloo")
        rank, workers = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, workers = 0, 1

    torch.manual_seed(args.seed)  # same initial model everywhere; rdmaps broadcasts it anyway
    model = model_for(hidden)
    sgd = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    if args.backend == "rdmaps":
        staleness = args.staleness
        dc = None if args.dc == "none" else args.dc
        opt = rps.DistributedOptimizer(sgd, model.named_parameters(), staleness=staleness, dc=dc,
                                       lambda_=args.lambda_, flat_parameters=args.flat_parameters == "on")
        rps.broadcast_parameters(model.state_dict(), root_rank=0)
    elif args.backend == "gloo":
        model = torch.nn.parallel.DistributedDataParallel(model)
        opt = sgd
    else:
        opt = sgd

    x, y = load(args.data, "train")
    mine = torch.arange(rank, len(x), workers)  # this worker's share
    steps = int(args.epochs * len(x) / (args.batch * workers))
    scheduler = None
    if args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=args.lr * 0.05)
    gen = torch.Generator().manual_seed(args.seed + rank)
    order = mine[torch.randperm(len(mine), generator=gen)]
    pos, loss_sum = 0, 0.0
    start = time.perf_counter()
    for step in range(steps):
        if pos + args.batch > len(order):
            order, pos = mine[torch.randperm(len(mine), generator=gen)], 0
        idx = order[pos:pos + args.batch]
        pos += args.batch
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if scheduler:
            scheduler.step()
        loss_sum += loss.item()
        if not math.isfinite(loss.item()):
            sys.exit(f"torch_fashion_mnist: worker {rank}: loss is {loss.item()} at step {step}: the training "
                     "diverged; lower --lr or --lambda")
    elapsed = time.perf_counter() - start

    result = {"backend": args.backend, "worker": rank, "workers": workers, "steps": steps, "batch": args.batch,
              "seconds": round(elapsed, 3), "samples_per_s": round(steps * args.batch / elapsed, 1),
              "mean_loss": round(loss_sum / max(steps, 1), 4)}
    if args.backend == "rdmaps":
        opt.load_latest()  # the servers' parameters once every worker is done
        kept = ("pushes", "pulls", "pulls_skipped", "pull_bytes_in_place")
        result["stats"] = {k: v for k, v in opt.stats().items() if k in kept}
    if rank == 0:
        xt, yt = load(args.data, "test")
        result["test_accuracy"] = round(accuracy(model, xt, yt), 4)
    print("result " + json.dumps(result), flush=True)
    if rank == 0 and args.expect_accuracy is not None and result["test_accuracy"] < args.expect_accuracy:
        print(f"torch_fashion_mnist: test accuracy {result['test_accuracy']:.4f} is below the expected "
              f"{args.expect_accuracy}", file=sys.stderr)
        sys.exit(3)
    if args.backend == "gloo":
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
