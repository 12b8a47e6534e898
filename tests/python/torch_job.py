"""One process of the rdmaps.torch tests; tests/python/test_torch.py starts
them with a launcher's variables. Exits non-zero with a message on any failure."""

import copy
import gzip
import os
import signal
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import rdmaps
import rdmaps.torch as rps

import forked

DATA = os.environ.get("RDMAPS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def fail(message):
    print(f"torch_job: FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def fashion_mnist(count):
    """The first `count` training images and labels (real data)."""
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(16 + 784 * count)[16:], dtype=np.uint8)
    with gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(8 + count)[8:], dtype=np.uint8)
    return torch.from_numpy(x.reshape(count, 784).astype(np.float32) / 255), torch.from_numpy(y.astype(np.int64))


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def expect_raises(kind, text, f):
    try:
        f()
    except kind as e:
        if text not in str(e):
            fail(f"{kind.__name__} without '{text}': {e}")
        return
    except Exception as e:  # noqa: BLE001 - reported as a failure
        fail(f"expected {kind.__name__} containing '{text}', got {type(e).__name__}: {e}")
    fail(f"expected {kind.__name__} containing '{text}', nothing raised")


def gradcheck():
    """The parameters after each step equal w - lr * (torch autograd's gradient) bit for bit,
    lr following the optimizer's param_groups as a scheduler sets it."""
    torch.manual_seed(0)
    model = mlp()
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), model.named_parameters(), staleness=0)
    with torch.no_grad():  # make the servers' copy differ from the model, then broadcast
        for p in model.parameters():
            p.add_(0.01)
    rps.broadcast_parameters(model.state_dict(), root_rank=0)
    ref = copy.deepcopy(model)
    x, y = fashion_mnist(3 * 64)
    names = [n for n, _ in model.named_parameters()]
    # The rate as a scheduler sets it, as a resumed state_dict sets it, and 0
    # (a push at rate 0 moves nothing: before protocol 11 it meant "the servers' own").
    steps = [(0.5, "groups"), (0.5, "groups"), (0.125, "groups"), (0.25, "state_dict"), (0.0, "groups")]
    for step, (lr, how) in enumerate(steps):
        if how == "state_dict":
            sd = opt.state_dict()
            sd["param_groups"][0]["lr"] = lr
            opt.load_state_dict(sd)
        else:
            for group in opt.param_groups:
                group["lr"] = lr
        xb, yb = x[64 * step:64 * (step + 1)], y[64 * step:64 * (step + 1)]
        ref.load_state_dict(model.state_dict())
        grads = torch.autograd.grad(F.cross_entropy(ref(xb), yb), list(ref.parameters()))
        expected = [p.detach() - lr * g for p, g in zip(ref.parameters(), grads)]
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        if len(opt._sent) != len(names) or opt._pending:
            fail(f"step {step}: {len(opt._sent)} pushes made during backward, expected one per parameter "
                 f"({len(names)}) at lr {lr}, and {len(opt._pending)} still under way when it returned, expected "
                 "none (clipping p.grad after backward must change nothing sent)")
        sent = opt.stats()["pushes"]
        opt.step()
        if opt.stats()["pushes"] == sent:
            fail(f"step {step} at lr {lr}: nothing sent")
        for name, p, e in zip(names, model.parameters(), expected):
            if not torch.equal(p.detach(), e):
                fail(f"step {step}: '{name}' differs from w - lr*g by up to {(p.detach() - e).abs().max().item():g}")

    # Bad tensors are clear exceptions.
    sd = model.state_dict()
    bad = dict(sd)
    bad["0.weight"] = torch.zeros(3)
    expect_raises(ValueError, "'0.weight' has 3 elements", lambda: rps.broadcast_parameters(bad))
    bad["0.weight"] = torch.zeros(32, 784, dtype=torch.float64)
    expect_raises(TypeError, "torch.float64", lambda: rps.broadcast_parameters(bad))
    renamed = {"copy." + k: v.clone() for k, v in sd.items()}  # neither the names nor the tensors match
    expect_raises(TypeError, "state_dict is NoneType, not a mapping", lambda: rps.broadcast_parameters(None))
    expect_raises(ValueError, "root_rank '0' is not a worker rank", lambda: rps.broadcast_parameters(sd, root_rank="0"))
    expect_raises(ValueError, "no value for 4 parameter(s)", lambda: rps.broadcast_parameters(renamed))
    double = mlp().double()
    expect_raises(TypeError, "torch.float64",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD(double.parameters(), lr=0.1),
                                                   double.named_parameters()))
    whole = torch.zeros(8)
    halves = [torch.nn.Parameter(whole[:5]), torch.nn.Parameter(whole[3:])]  # overlapping views
    expect_raises(ValueError, "parameters 'h0' and 'h1' share memory",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD(halves, lr=0.1), [("h0", halves[0]),
                                                                                   ("h1", halves[1])]))
    transposed = torch.nn.Parameter(torch.zeros(4, 3).t())
    expect_raises(ValueError, "not contiguous",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD([transposed], lr=0.1), [("t", transposed)]))
    expect_raises(TypeError, "wrap a torch.optim.SGD",
                  lambda: rps.DistributedOptimizer(torch.optim.Adam(model.parameters()), model.named_parameters()))
    expect_raises(RuntimeError, "already exists",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5),
                                                   model.named_parameters()))
    # Whatever this torch's Optimizer.__init__ sets (step hooks, profiling), the wrapper has too.
    missing = set(vars(torch.optim.SGD(mlp().parameters(), lr=0.1))) - set(vars(opt)) - {"param_groups", "state"}
    if missing:
        fail(f"DistributedOptimizer lacks what torch.optim.Optimizer.__init__ sets: {sorted(missing)}")
    # A scheduler on the wrapper sees its step() (no "scheduler before optimizer" warning) and sets the rate.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        opt.param_groups[0]["lr"] = 0.5
        scheduler.base_lrs = [0.5]
        opt.zero_grad()
        F.cross_entropy(model(x[:64]), y[:64]).backward()
        opt.step()
        scheduler.step()
    if caught:
        fail(f"a StepLR on the optimizer warned: {caught[0].message}")
    if opt.param_groups[0]["lr"] != 0.25:
        fail(f"StepLR set the rate to {opt.param_groups[0]['lr']}, expected 0.25")
    opt.zero_grad(set_to_none=True)
    if any(p.grad is not None for p in model.parameters()):
        fail("zero_grad(set_to_none=True) left gradients")
    expect_raises(TypeError, "cannot be pickled or copied", lambda: copy.deepcopy(opt))
    # A parameter whose gradients no hook pushes is an error, not a silent no-op.
    late = torch.nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [late]})
    (late * 2).sum().backward()
    expect_raises(RuntimeError, "have gradients the servers never get (a tensor of shape (3,))", opt.step)
    print("gradcheck ok", flush=True)


def accumulate():
    """backward_passes_per_step=2 with weight decay: one push of the mean of two
    gradients plus wd*w, applied exactly; a third gradient before step() makes
    step() raise, and the optimizer goes on afterwards."""
    torch.manual_seed(1)
    model = mlp()
    lr, wd = 0.25, 0.01
    # Refused constructions leave nothing behind: the corrected one below connects.
    sgd = lambda: torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)  # noqa: E731
    expect_raises(ValueError, "staleness=2.7 is not a whole number",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), staleness=2.7))
    expect_raises(ValueError, "backward_passes_per_step=1.5 is not a whole number",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), backward_passes_per_step=1.5))
    expect_raises(TypeError, "flat_parameters='no' is not True or False",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), flat_parameters="no"))
    expect_raises(ValueError, "--bogus",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), bogus=1))
    # What the wrapped SGD, dc= or staleness= decide is refused as an option, not silently overwritten.
    expect_raises(ValueError, "lr=5.0 is set by the wrapped torch.optim.SGD's lr",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), lr=5.0))
    expect_raises(ValueError, "rule='momentum' is set by DistributedOptimizer(dc=)",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), rule="momentum"))
    expect_raises(ValueError, "staleness=3 is set by DistributedOptimizer(staleness=)",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), config={"staleness": 3}))
    expect_raises(TypeError, "config='--lr 3' is not a dict of options",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), config="--lr 3"))
    expect_raises(TypeError, "named_parameters of type int is not (name, parameter) pairs",
                  lambda: rps.DistributedOptimizer(sgd(), 5))
    # Settings that would be dropped without a word: a lambda without delay compensation, a group that maximizes.
    expect_raises(ValueError, "lambda_=0.5 is delay compensation's",
                  lambda: rps.DistributedOptimizer(sgd(), model.named_parameters(), lambda_=0.5))
    expect_raises(ValueError, "maximize=True is not supported",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD([{"params": [model[0].weight]},
                                                                    {"params": [model[0].bias], "maximize": True}],
                                                                   lr=lr), model.named_parameters()))
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd),
                                   model.named_parameters(), backward_passes_per_step=2)
    rps.broadcast_parameters(model.state_dict())
    ref = copy.deepcopy(model)
    x, y = fashion_mnist(64)
    halves = [(x[:32], y[:32]), (x[32:], y[32:])]
    g = [torch.zeros_like(p) for p in ref.parameters()]
    for xb, yb in halves:
        for acc, gi in zip(g, torch.autograd.grad(F.cross_entropy(ref(xb), yb), list(ref.parameters()))):
            acc += gi
    expected = [p.detach() - lr * (gi / 2 + wd * p.detach()) for p, gi in zip(ref.parameters(), g)]
    opt.zero_grad()
    for xb, yb in halves:
        F.cross_entropy(model(xb), yb).backward()
    if len(opt._sent) != len(expected):
        fail(f"{len(opt._sent)} pushes for two backward passes, expected one per parameter")
    opt.step()
    for (name, p), e in zip(model.named_parameters(), expected):
        if not torch.allclose(p.detach(), e, rtol=0, atol=1e-6):
            fail(f"'{name}' differs from w - lr*(mean gradient + wd*w) by {(p.detach() - e).abs().max().item():g}")
    opt.zero_grad()
    for xb, yb in halves + halves[:1]:
        F.cross_entropy(model(xb), yb).backward()
    expect_raises(RuntimeError, "got gradient 3 before step()", opt.step)
    opt.zero_grad()  # usable again after the error
    for xb, yb in halves:
        F.cross_entropy(model(xb), yb).backward()
    opt.step()
    # A rate no push can carry fails that step() and sends nothing; the next works.
    before = [p.detach().clone() for p in model.parameters()]
    opt.param_groups[0]["lr"] = -1.0
    opt.zero_grad()
    for xb, yb in halves:
        F.cross_entropy(model(xb), yb).backward()
    expect_raises(ValueError, "learning rate -1.0 in param_groups", opt.step)
    opt.load_latest()
    if not all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before)):
        fail("a step at learning rate -1 changed the parameters")
    opt.param_groups[0]["lr"] = lr
    opt.zero_grad()
    for xb, yb in halves:
        F.cross_entropy(model(xb), yb).backward()
    opt.step()

    # A closure that raises after its backward passes: the next step counts its own passes (it raised "got
    # gradient 3 before step()" and dropped its gradient).
    def closure(fails):
        opt.zero_grad()
        for xb, yb in halves:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
        if fails:
            raise ArithmeticError("the loss went bad")
        return loss

    expect_raises(ArithmeticError, "the loss went bad", lambda: opt.step(lambda: closure(True)))
    # What a backward pass met before the closure raised is said, not dropped.
    opt.param_groups[0]["lr"] = -1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expect_raises(ArithmeticError, "the loss went bad", lambda: opt.step(lambda: closure(True)))
    opt.param_groups[0]["lr"] = lr
    if not any("learning rate -1.0 in param_groups" in str(w.message) for w in caught):
        fail(f"a backward's error before the closure raised was dropped: {[str(w.message) for w in caught]}")
    if not torch.is_tensor(opt.step(lambda: closure(False))):
        fail("step(closure) did not return the closure's loss")
    print("accumulate ok", flush=True)


def extra_state():
    """A module with get_extra_state() puts a value that is no tensor in its
    state_dict: broadcast_parameters() leaves it out, as any entry that is no
    parameter (it raised AttributeError on its data_ptr())."""

    class Versioned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(3, 2)

        def get_extra_state(self):
            return {"version": 2}

        def set_extra_state(self, state):
            pass

        def forward(self, x):
            return self.l(x)

    torch.manual_seed(4)
    model = Versioned()
    # One parameter under two names (the lists of two models that tie it): trained once, under the first.
    named = list(model.named_parameters()) + [("alias.weight", model.l.weight)]
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), named)
    if [n for n, _ in opt._params] != ["l.weight", "l.bias"]:
        fail(f"a parameter under two names was declared as {[n for n, _ in opt._params]}")
    # A refused broadcast is none: the first step still warns that the servers start from zeros.
    expect_raises(TypeError, "is torch.float16",
                  lambda: rps.broadcast_parameters({"l.weight": model.l.weight.detach().half(), "l.bias": model.l.bias}))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        opt.zero_grad()
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
    if not any("before broadcast_parameters()" in str(w.message) for w in said):
        fail(f"no warning for a step after a refused broadcast: {[str(w.message) for w in said]}")
    state = model.state_dict()
    if not isinstance(state.get("_extra_state"), dict):
        fail(f"the state_dict has no extra state to test with: {list(state)}")
    rps.broadcast_parameters(state)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    model(torch.ones(4, 3)).sum().backward()
    expected = [b - 0.5 * p.grad for b, p in zip(before, model.parameters())]
    opt.step()
    for (name, p), e in zip(model.named_parameters(), expected):
        if not torch.equal(p.detach(), e):
            fail(f"'{name}' differs from w - lr*g after a broadcast with extra state")
    print("extra-state ok", flush=True)


def two_groups(**sgd):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    groups = [{"params": list(model[0].parameters())}, {"params": list(model[1].parameters())}]
    return model, groups, torch.optim.SGD(groups, **sgd)


def group_lr():
    """A push carries one rate for every parameter: groups whose lr was set
    apart after the optimizer was made (construction refuses them) make
    step() raise naming each group's rate, and nothing is sent. They trained
    every group at group 0's rate, silently."""
    torch.manual_seed(5)
    model, _, sgd = two_groups(lr=torch.tensor(0.1))  # a tensor rate, as torch 2 allows: one value, not refused
    opt = rps.DistributedOptimizer(sgd, model.named_parameters())
    rps.broadcast_parameters(model.state_dict())
    x = torch.ones(4, 3)

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    for rates in ((0.1, 0.0), (0.0, 0.1)):  # group 1 frozen by its rate, or group 0
        for group, rate in zip(opt.param_groups, rates):
            group["lr"] = rate
        before = [p.detach().clone() for p in model.parameters()]
        sent = opt.stats()["pushes"]
        expect_raises(ValueError, f"parameter groups with different lr (group 0: {rates[0]}, group 1: {rates[1]})",
                      step)
        opt.load_latest()
        if opt.stats()["pushes"] != sent:
            fail(f"a step with group rates {rates} sent {opt.stats()['pushes'] - sent} pushes")
        if not all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before)):
            fail(f"a step with group rates {rates} changed the parameters")
    # A rate beyond float32's range (the pushes carry a float32) is refused, not sent as infinity and ignored.
    for group in opt.param_groups:
        group["lr"] = 1e39
    sent = opt.stats()["pushes"]
    expect_raises(ValueError, "learning rate 1e+39 in param_groups is not a finite number of at least 0 within "
                  "float32's range", step)
    opt.load_latest()
    if opt.stats()["pushes"] != sent:
        fail("a step at a rate of 1e39 sent pushes")
    for group in opt.param_groups:
        group["lr"] = 0.1
    opt.zero_grad()
    model(x).sum().backward()
    expected = [p.detach() - 0.1 * p.grad for p in model.parameters()]
    opt.step()
    if not all(torch.equal(p.detach(), e) for p, e in zip(model.parameters(), expected)):
        fail("a step at one rate again differs from w - lr*g")
    print("group-lr ok", flush=True)


def child_exits_without_touching_the_parents_worker(opt, step):
    """A forked child that exits normally runs init()'s atexit shutdown():
    it hung for good joining a comm thread the child lacks. It must return at
    once and leave the parent's worker training."""
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    code = forked.wait_or_kill(pid, 30)
    if code is None:
        fail("a forked child that exited normally hung in rdmaps.torch.shutdown()")
    if code != 0:
        fail(f"the forked child exited with {code}")
    opt.zero_grad()
    step()  # the parent's worker did not leave


def weight_decay():
    """weight_decay is read at each step, as torch's SGD reads it: set in
    param_groups after the optimizer was made, or by load_state_dict(), it
    applies from that step on (the one at construction applied for good).
    Groups that disagree are refused at step(), as at construction."""
    torch.manual_seed(6)
    model, _, sgd = two_groups(lr=0.1)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD([{"params": list(ref[0].parameters())}, {"params": list(ref[1].parameters())}], lr=0.1)
    opt = rps.DistributedOptimizer(sgd, model.named_parameters())
    rps.broadcast_parameters(model.state_dict())
    x = torch.randn(4, 3)

    def step_both_and_compare(what):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        for (name, p), r in zip(model.named_parameters(), ref.parameters()):
            if not torch.allclose(p.detach(), r.detach(), rtol=0, atol=1e-6):
                fail(f"{what}: '{name}' differs from torch's SGD by {(p.detach() - r.detach()).abs().max().item():g}")

    for step, (wd, how) in enumerate([(0.5, "groups"), (0.25, "state_dict"), (0.0, "groups")]):
        for o in (opt, ref_opt):
            if how == "state_dict":
                state = o.state_dict()
                for group in state["param_groups"]:
                    group["weight_decay"] = wd
                o.load_state_dict(state)
            else:
                for group in o.param_groups:
                    group["weight_decay"] = wd
        step_both_and_compare(f"step {step} (weight_decay {wd} set by {how})")
    child_exits_without_touching_the_parents_worker(opt, lambda: (model(x).square().mean().backward(), opt.step()))
    # Groups may differ in weight decay ("no decay for biases"): the worker adds
    # each group's own (they were refused, though the servers never see it).
    ref.load_state_dict(model.state_dict())  # the child's check stepped the model alone
    for o in (opt, ref_opt):
        o.param_groups[1]["weight_decay"] = 0.5
    step_both_and_compare("groups with weight decay 0 and 0.5")
    # Momentum is the servers' rule: a change after construction is refused,
    # not ignored (it was ignored: the servers kept plain SGD).
    opt.param_groups[1]["weight_decay"] = 0.0
    for group in opt.param_groups:
        group["momentum"] = 0.9
    opt.zero_grad()
    model(x).square().mean().backward()
    expect_raises(ValueError, "momentum is 0.9 in param_groups, 0.0 when the DistributedOptimizer was made (a "
                  "scheduler that cycles momentum, as OneCycleLR", opt.step)
    print("weight-decay ok", flush=True)


def sparse():
    """A gradient rdmaps cannot send (an Embedding(sparse=True)'s) is raised by
    step(), not inside backward (torch 1.13 hangs at exit), at every step: a
    later step names it again rather than an error it caused."""
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model.named_parameters())
    tokens = torch.tensor([[1, 2], [3, 4]])
    for _ in range(2):
        opt.zero_grad()
        model(tokens).sum().backward()  # must not raise
        expect_raises(TypeError, "gradient of '0.weight' has layout torch.sparse_coo", opt.step)
    print("sparse ok", flush=True)


def server_killed():
    """A server killed under a worker: shutdown() reports the pushes it lost and
    still leaves (the worker closed, nothing left for atexit to raise again)."""
    pidfile = os.environ["RDMAPS_TEST_PIDFILE"]
    if os.environ["RANK"] == "0":
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
    rps.init(timeout=20)  # rank 0 serves here until it is killed
    # Gradients of 13 MB: more than the servers' inbox takes without returning credits,
    # so the pushes after the kill wait for credits that never come.
    model = torch.nn.Sequential(torch.nn.Linear(784, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10))
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model.named_parameters())
    x, y = fashion_mnist(64)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    with open(pidfile) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    time.sleep(0.5)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()  # pushes to a dead server: reported by the wait, not here
    try:
        rps.shutdown()
        fail("shutdown() did not report the pushes the dead server never took")
    except rdmaps.PeerGone as e:
        print(f"shutdown raised PeerGone: {e}", flush=True)
    if not opt._worker.closed:
        fail("shutdown() left the worker open")
    if rps.runtime._optimizer is not None:
        fail("shutdown() left the optimizer for atexit")
    # After leaving, each way back says so (they said "was closed", "already called", or tried to connect).
    expect_raises(RuntimeError, "step() after shutdown()", opt.step)
    expect_raises(RuntimeError, "load_latest() after shutdown()", opt.load_latest)
    expect_raises(RuntimeError, "stats() after shutdown()", opt.stats)
    expect_raises(RuntimeError, "DistributedOptimizer after shutdown()",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                                   model.named_parameters()))
    expect_raises(RuntimeError, "shutdown() left the job", rps.init)
    # The hooks left with the worker: a backward now pushes nothing (each push met "the worker was closed").
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    if opt._hook_error is not None or opt._sent:
        fail(f"a backward after shutdown() ran the hooks: {opt._hook_error!r}, sent {opt._sent}")
    print("server-killed ok", flush=True)


def roles():
    """Every rank reports what init() made of it; workers train one step."""
    p = rps.init(timeout=60)  # servers serve here and exit
    model = mlp()
    empty = torch.nn.Parameter(torch.zeros(0, 5))  # nothing to train: not sent, and no error
    model.register_parameter("empty", empty)
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model.named_parameters(),
                                   staleness=1, dc=True)
    rps.broadcast_parameters(model.state_dict())
    x, y = fashion_mnist(64)
    opt.zero_grad()
    (F.cross_entropy(model(x), y) + empty.sum()).backward()
    opt.step()
    opt.load_latest()
    print(f"role worker {rps.rank()} of {rps.size()} from {p.source}", flush=True)


class Branchy(torch.nn.Module):
    """A layer the forward pass uses only when asked: some micro-batches, some steps."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(6, 3)
        self.b = torch.nn.Linear(6, 3)

    def forward(self, x, use_b):
        return self.a(x) + self.b(x) if use_b else self.a(x)


def partial():
    """As torch's SGD (momentum, weight decay, two backward passes per step): a
    layer reached in one pass of two has its gradient sent at step(), one not
    reached at all but holding zeros (zero_grad(set_to_none=False)) still
    moves by momentum and weight decay."""
    torch.manual_seed(3)
    model = Branchy()
    ref = copy.deepcopy(model)
    lr, mu, wd = 0.1, 0.9, 0.01
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr, momentum=mu, weight_decay=wd),
                                   model.named_parameters(), backward_passes_per_step=2)
    rps.broadcast_parameters(model.state_dict())
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=mu, weight_decay=wd)
    x = torch.randn(4, 6)
    for step, uses in enumerate([(True, False), (False, False), (False, True), (False, False)]):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=False)
            for use_b in uses:
                m(x, use_b).square().mean().backward()
        for p in ref.parameters():
            if p.grad is not None:
                p.grad /= 2  # the mean over the passes, as backward_passes_per_step sends it
        ref_opt.step()
        opt.step()
        for (name, p), r in zip(model.named_parameters(), ref.parameters()):
            if not torch.allclose(p.detach(), r.detach(), rtol=0, atol=1e-6):
                fail(f"step {step} (b used in {uses}): '{name}' differs from torch's SGD by "
                     f"{(p.detach() - r.detach()).abs().max().item():g}")
    print("partial ok", flush=True)


def warmup():
    """A schedule whose rate is 0 at some steps (a warm-up from 0, a decay to 0)
    trains as torch's SGD with momentum and weight decay: at rate 0 the
    parameters stay and the momentum buffer still takes the gradient."""
    torch.manual_seed(4)
    model = mlp()
    ref = copy.deepcopy(model)
    mu, wd = 0.9, 0.01
    # Wrapped at a rate below float32's normal range, as a warm-up scheduler made before wrapping may leave it
    # (1e-40 and 0 were refused as --lr: the rule's rate must be a normal float, and no push applies it).
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1e-40, momentum=mu, weight_decay=wd),
                                   model.named_parameters(), staleness=0)
    rps.broadcast_parameters(model.state_dict())
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=mu, weight_decay=wd)
    x, y = fashion_mnist(5 * 64)
    for step, lr in enumerate([0.0, 0.05, 0.1, 0.0, 0.1]):
        before = [p.detach().clone() for p in model.parameters()]
        for m, o in ((model, opt), (ref, ref_opt)):
            for group in o.param_groups:
                group["lr"] = lr
            o.zero_grad()
            F.cross_entropy(m(x[64 * step:64 * (step + 1)]), y[64 * step:64 * (step + 1)]).backward()
            o.step()
        for (name, p), r, b in zip(model.named_parameters(), ref.parameters(), before):
            if lr == 0 and not torch.equal(p.detach(), b):
                fail(f"step {step} at rate 0 moved '{name}'")
            if not torch.allclose(p.detach(), r.detach(), rtol=0, atol=1e-6):
                fail(f"step {step} at rate {lr}: '{name}' differs from torch's SGD by "
                     f"{(p.detach() - r.detach()).abs().max().item():g}")
    print("warmup ok", flush=True)


def clip():
    """What backward made is what the servers get: clipping p.grad in place
    between backward() and step() changes nothing sent (the push read p.grad
    while the clip wrote it, and the servers got a mix of the two). A step
    skipped after a backward keeps what it pushed, and the next backward
    counts from zero (it raised as a pass too many and was not sent). Made
    under torch.no_grad(), the optimizer hooks all the same (it failed, and a
    retry was refused)."""
    p = torch.nn.Parameter(torch.zeros(8 << 20))  # 32 MB: a push takes long enough to be caught mid-way
    with torch.no_grad():
        opt = rps.DistributedOptimizer(torch.optim.SGD([p], lr=0.1), [("p", p)], staleness=0)
    rps.broadcast_parameters({"p": p})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for step in range(3):
            opt.zero_grad()
            (p * 1.0).sum().backward()  # every gradient 1
            p.grad.mul_(0)  # clip_grad_norm_ to nothing, in place
            opt.step()
            unclipped = int((p.detach() - (-0.1 * (step + 1))).abs().lt(1e-5).sum())
            if unclipped != p.numel():
                fail(f"step {step}: {p.numel() - unclipped} of {p.numel()} elements moved by something else than "
                     "the gradient backward made")
        # The clip was lost without a word: said, once.
        changed = [str(w.message) for w in said if "changed after backward() pushed it" in str(w.message)]
        if len(changed) != 1 or "p.grad of 'p'" not in changed[0]:
            fail(f"a gradient clipped after backward was said {len(changed)} times: {[str(w.message) for w in said]}")
        said.clear()
        opt._warned_changed_grad = False  # said once per optimizer: a false warning below would go unseen
        opt.zero_grad()
        (p * 1.0).sum().backward()
        opt.zero_grad()  # the step skipped: its gradient was pushed
        (p * 1.0).sum().backward()
        opt.step()
    if said:
        fail(f"a skipped step was warned of: {[str(w.message) for w in said]}")
    if not torch.allclose(p.detach(), torch.full_like(p, -0.5), rtol=0, atol=1e-5):
        fail(f"after a skipped step: {p.detach()[:3].tolist()}, expected -0.5 (both gradients applied)")
    print("clip ok", flush=True)


def inplace():
    """With flat_parameters=False the optimizer registers each parameter and
    leaves its storage alone: over tcp the pulls land straight in a 2 MiB
    weight (whole write-back messages inside it), exactly."""
    torch.manual_seed(2)
    model = torch.nn.Linear(1024, 512, bias=False)
    storage = model.weight.data_ptr()
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), model.named_parameters(), staleness=0,
                                   flat_parameters=False)
    if model.weight.data_ptr() != storage:
        fail("flat_parameters=False moved the weight to other memory")
    rps.broadcast_parameters(model.state_dict())
    x = torch.randn(8, 1024)
    steps = 3
    for step in range(steps):
        before = model.weight.detach().clone()
        opt.zero_grad()
        model(x).square().mean().backward()
        expected = before - 0.5 * model.weight.grad
        opt.step()
        if not torch.equal(model.weight.detach(), expected):
            fail(f"step {step}: the weight pulled in place differs from w - lr*g")
    landed = opt.stats()["pull_bytes_in_place"]
    if landed < steps * model.weight.numel() * 4:
        fail(f"{landed} bytes landed in place in {steps} pulls of a {model.weight.numel() * 4}-byte weight over tcp")
    # A weight resized since the optimizer declared it is named against what was declared (the message
    # compared it with its own new size, the wrong way round, or not at all).
    model.weight.data = torch.zeros(512, 2048)
    expect_raises(ValueError, "parameter of 'weight' has 1048576 elements, 524288 were declared", opt.load_latest)
    # The next backward failed inside autograd ("invalid gradient"), naming neither.
    expect_raises(ValueError, "parameter 'weight' has shape (512, 2048) now, (512, 1024) when", opt.zero_grad)
    print("inplace ok", flush=True)


def flat(own_buffer):
    """The parameters of a model of several tensors lie in one registered
    buffer in table order, so every pull lands straight in them (over tcp by
    message, on the put path by put), exactly. The optimizer makes that buffer
    (values unchanged), or keeps the one the caller laid them out in."""
    torch.manual_seed(3)
    model = mlp()
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    values = [p.detach().clone() for p in params]
    if own_buffer:
        mine = torch.empty(total)
        at = 0
        with torch.no_grad():
            for p in params:
                mine[at:at + p.numel()].view_as(p).copy_(p)
                p.data = mine[at:at + p.numel()].view_as(p)
                at += p.numel()
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), model.named_parameters(), staleness=0)
    if own_buffer and params[0].data_ptr() != mine.data_ptr():
        fail("the optimizer replaced a buffer the parameters already lay in, in order")
    for (name, p), a, b in zip(model.named_parameters(), params, params[1:]):
        if b.data_ptr() != a.data_ptr() + 4 * a.numel():
            fail(f"the parameter after '{name}' does not follow it in memory")
    for (name, p), v in zip(model.named_parameters(), values):
        if not torch.equal(p.detach(), v):
            fail(f"laying the parameters out changed '{name}'")
    rps.broadcast_parameters(model.state_dict())
    x, y = fashion_mnist(64)
    steps = 3
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        expected = [p.detach() - 0.5 * p.grad for p in params]
        opt.step()
        for (name, p), e in zip(model.named_parameters(), expected):
            if not torch.equal(p.detach(), e):
                fail(f"step {step}: '{name}' pulled in place differs from w - lr*g")
    landed = opt.stats()["pull_bytes_in_place"]
    if landed != (steps + 1) * total * 4:  # the steps' pulls and broadcast_parameters' one
        fail(f"{landed} bytes landed in place in {steps + 1} pulls of a {total * 4}-byte model of {len(params)} tensors")
    print("flat ok", flush=True)


def metrics():
    """init(metrics=) on every rank: the server says where it serves them, and this worker's
    DistributedOptimizer serves its own counters there (a server-only option before, refused on workers)."""
    import urllib.request
    torch.manual_seed(0)
    model = mlp()
    expect_raises(ValueError, "metrics= is given to rdmaps.torch.init(metrics=)",
                  lambda: rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                                   model.named_parameters(), metrics="127.0.0.1:0"))
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model.named_parameters())
    rps.broadcast_parameters(model.state_dict())
    x, y = fashion_mnist(32)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    address = opt.metrics_address
    if address != f"127.0.0.1:{int(os.environ['METRICS_PORT']) + rps.placement().rank}":  # PORT+rank
        fail(f"rank {rps.placement().rank} serves metrics at {address}, given port {os.environ['METRICS_PORT']}")
    if not address.startswith("127.0.0.1:") or address.endswith(":0"):
        fail(f"metrics_address is {address!r}")
    page = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    pushed = [line for line in page.splitlines() if line.startswith("rdmaps_worker_push_bytes_total")]
    if not pushed or float(pushed[0].split()[-1]) <= 0:
        fail(f"no pushed bytes on {address}/metrics: {pushed}")
    print("metrics ok", flush=True)


def late_lr():
    """A rate set between backward() and step() is said to apply from the next step (the pushes went during
    backward); set before backward(), it applies to that step's gradients."""
    torch.manual_seed(0)
    model = mlp()
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), model.named_parameters(), staleness=0)
    rps.broadcast_parameters(model.state_dict())
    x, y = fashion_mnist(16)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.param_groups[0]["lr"] = 0.1
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        opt.step()
    if not any("changed between backward() and step()" in str(w.message) for w in said):
        fail(f"no warning for a rate set between backward() and step(): {[str(w.message) for w in said]}")
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    expected = [p.detach() - 0.1 * p.grad for p in model.parameters()]
    opt.step()
    for p, e in zip(model.parameters(), expected):
        if not torch.allclose(p.detach(), e, atol=1e-6):
            fail("the rate set before backward() was not this step's")
    print("late-lr ok", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode = sys.argv[1]
    trainers = {"gradcheck": gradcheck, "accumulate": accumulate, "sparse": sparse, "partial": partial,
                "inplace": inplace, "warmup": warmup, "clip": clip, "extra-state": extra_state, "group-lr": group_lr, "weight-decay": weight_decay,
                "flat": lambda: flat(own_buffer=False), "flat-own": lambda: flat(own_buffer=True), "late-lr": late_lr}
    if mode in trainers:
        rps.init(timeout=60)  # rank 0 serves here and exits; the others train
        trainers[mode]()
    elif mode == "metrics":
        rps.init(timeout=60, metrics=f"127.0.0.1:{os.environ['METRICS_PORT']}")
        metrics()
    elif mode == "roles":
        roles()
    elif mode == "server-killed":
        server_killed()
    else:
        fail(f"unknown mode {mode}")
