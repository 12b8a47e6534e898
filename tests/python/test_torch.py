"""rdmaps.torch end to end: real server and worker processes started with each
launcher's variables, real Fashion-MNIST, real UCX."""

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import types
import unittest
import warnings

try:
    import torch  # noqa: F401
except ImportError:
    print("SKIP: python3-torch is not installed (scripts/install-deps.sh installs it)")
    sys.exit(77)

import forked
import rdmaps
from rdmaps.launch import free_port

# What a job script exports to every rank (docs/security.md): a launched rank refuses to start without one,
# on a loopback MASTER_ADDR too.
os.environ.setdefault("RDMAPS_SECRET", secrets.token_hex(32))
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "torch_fashion_mnist.py")
JOB = os.path.join(HERE, "torch_job.py")
# Variables of every launcher, removed so that only the ones a test sets count.
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
               "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID",
               "PMIX_RANK", "PMIX_NAMESPACE",
               "SLURM_LAUNCH_NODE_IPADDR", "RDMAPS_RANK", "RDMAPS_WORLD_SIZE", "RDMAPS_SERVERS", "RDMAPS_NUM_SERVERS",
               "RDMAPS_MASTER_ADDR", "RDMAPS_MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")


def launcher_env(style, rank, size, port):
    if style == "torchrun":
        return {"RANK": rank, "WORLD_SIZE": size, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    if style == "openmpi":  # mpirun -x MASTER_ADDR -x MASTER_PORT
        return {"OMPI_COMM_WORLD_RANK": rank, "OMPI_COMM_WORLD_SIZE": size, "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port}
    if style == "pmi":
        return {"PMI_RANK": rank, "PMI_SIZE": size, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    if style == "slurm":  # srun without PMIx: rank 0 runs on the launch node
        return {"SLURM_PROCID": rank, "SLURM_NTASKS": size, "SLURM_STEP_ID": "0",
                "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1", "RDMAPS_MASTER_PORT": port}
    raise ValueError(style)


def run_job(style, size, command, extra_env=None, timeout=240):
    """Starts `size` processes of `command` ([SCRIPT, ARGS...]); returns [(returncode, output)] by rank."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    base["RDMAPS_SECRET"] = secrets.token_hex(32)  # what a job script exports to every rank (docs/security.md)
    base.update(extra_env or {})
    children = []
    try:
        for rank in range(size):
            env = dict(base, **{k: str(v) for k, v in launcher_env(style, rank, size, port).items()})
            children.append(forked.Child(command, env))
        results = []
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                # Every rank's end, not only the one waited on: a rank that failed first was hidden
                # behind rank 0 waiting for it (a 240 s timeout that named nothing).
                said = "".join(f"\n--- rank {r} ({'running' if c.poll() is None else f'exit {c.returncode}'}):\n"
                               f"{c.output()[-3000:]}" for r, c in enumerate(children))
                raise AssertionError(f"the job did not end within {timeout} s:{said}") from None
            results.append((child.returncode, child.output()))
    finally:
        for child in children:
            child.close()
    return results


# UCX logs to stdout by default: its warnings (e.g. requests an abandoned send left in its pool at exit) may
# land between the lines a test asserts (CI, session 50).
UCX_LOG_LINE = re.compile(r"^\[\d+\.\d+\] \[[^]]*\] +\S+ +UCX +[A-Z]+ .*\n", re.MULTILINE)


def run_code(code, *args, env=None, timeout=120):
    """`python -c CODE ARGS...`, forked: its returncode, stdout and stderr, as subprocess.run gives them."""
    child = forked.Child(args, dict(os.environ if env is None else env), code=code, merge_output=False)
    try:
        child.wait(timeout)
        stdout = UCX_LOG_LINE.sub("", child.output())
        return types.SimpleNamespace(returncode=child.returncode, stdout=stdout, stderr=child.error_output())
    finally:
        child.close()


# A script's start: worker 0 of two (the other never comes) beside its server
# in this process, over tcp, with a model `m`.
FIRST_OF_TWO_WORKERS = (
    "import os, signal, sys, threading, time, torch, rdmaps, rdmaps.torch as rps\n"
    "s = rdmaps.Server('127.0.0.1:0', workers=2, transport='tcp', log_connections=False,\n"
    "                  rule_from_workers=True)\n"
    "threading.Thread(target=s.serve, daemon=True).start()\n"
    "os.environ.update(RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='3', RDMAPS_SERVERS=s.address,\n"
    "                  RDMAPS_TRANSPORT='tcp')\n"
    "rps.init(timeout=40)\n"
    "m = torch.nn.Linear(3, 2)\n")

# A script's start: the only worker of a job, beside its server in this
# process, over tcp.
ONLY_WORKER = (
    "import os, sys, threading, time, torch, rdmaps, rdmaps.torch as rps\n"
    "s = rdmaps.Server('127.0.0.1:0', workers=1, transport='tcp', log_connections=False,\n"
    "                  rule_from_workers=True)\n"
    "threading.Thread(target=s.serve, daemon=True).start()\n"
    "os.environ.update(RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='2', RDMAPS_SERVERS=s.address,\n"
    "                  RDMAPS_TRANSPORT='tcp')\n"
    "rps.init(timeout=60)\n")



class TorchTest(unittest.TestCase):
    def assert_all_ok(self, results):
        for rank, (code, out) in enumerate(results):
            self.assertEqual(code, 0, f"rank {rank} exited with {code}:\n{out}")

    def run_mode(self, mode, transport):
        """torch_job.py MODE under torchrun, 2 ranks: every rank ends well and rank 1 says 'MODE ok'."""
        results = run_job("torchrun", 2, [JOB, mode],
                          {"RDMAPS_TRANSPORT": transport})
        self.assert_all_ok(results)
        self.assertIn(mode + " ok", results[1][1])
        return results

    def test_server_applies_exactly_torchs_autograd_gradients(self):
        results = self.run_mode("gradcheck", "tcp")
        self.assertIn("rank 0 serves", results[0][1])

    def test_layers_some_passes_or_steps_skip_train_as_torchs_sgd(self):
        self.run_mode("partial", "shm")

    def test_a_rate_of_zero_moves_nothing_and_feeds_momentum_as_torchs_sgd(self):
        self.run_mode("warmup", "shm")

    def test_clipping_after_backward_changes_nothing_sent_and_a_skipped_step_is_no_error(self):
        self.run_mode("clip", "tcp")

    def test_pulls_land_in_the_parameters_over_tcp(self):
        self.run_mode("inplace", "tcp")

    def test_a_model_of_several_tensors_lands_in_place_whole(self):
        # Over tcp by message; over shared memory by put (put_landing on: UCX 1.13 emulates puts into
        # registered memory there, so "auto" would copy), with a buffer the caller laid out.
        for mode, env in (("flat", {"RDMAPS_TRANSPORT": "tcp"}),
                          ("flat-own", {"RDMAPS_TRANSPORT": "shm", "RDMAPS_PUT_LANDING": "on"})):
            with self.subTest(mode=mode, transport=env["RDMAPS_TRANSPORT"]):
                results = run_job("torchrun", 2, [JOB, mode], env)
                self.assert_all_ok(results)
                self.assertIn("flat ok", results[1][1])

    def test_gradients_accumulate_over_backward_passes_with_weight_decay(self):
        results = self.run_mode("accumulate", "shm")
        self.assertNotIn("Exception ignored", results[1][1])  # the refused constructions left nothing for atexit

    def test_broadcast_leaves_out_state_dict_entries_that_are_no_tensors(self):
        self.run_mode("extra-state", "tcp")

    def test_groups_whose_lr_was_set_apart_are_refused_at_step(self):
        self.run_mode("group-lr", "tcp")

    def test_weight_decay_follows_param_groups_at_each_step(self):
        self.run_mode("weight-decay", "tcp")

    def test_a_sparse_gradient_is_raised_by_every_step_not_inside_backward(self):
        self.run_mode("sparse", "shm")

    def test_shutdown_after_the_server_died_reports_it_and_leaves(self):
        with tempfile.TemporaryDirectory() as tmp:
            for transport in ("tcp", "shm"):
                with self.subTest(transport=transport):
                    results = run_job("torchrun", 2, [JOB, "server-killed"],
                                      {"RDMAPS_TRANSPORT": transport,
                                       "RDMAPS_TEST_PIDFILE": os.path.join(tmp, f"server-{transport}.pid")})
                    self.assertEqual(results[0][0], -9, f"the server was not killed:\n{results[0][1]}")
                    code, out = results[1]
                    self.assertEqual(code, 0, out)
                    self.assertIn("shutdown raised PeerGone", out)
                    self.assertIn("server-killed ok", out)
                    self.assertNotIn("Exception ignored", out)  # atexit did not close it again

    def test_exit_after_ctrl_c_in_a_step_and_more_backward_passes_is_at_once(self):
        # A notebook's pattern: Ctrl-C a step blocked on the clock, then run the cell again. The new backward
        # pass queued its pushes behind the abandoned clock, and exit waited for them: the whole timeout.
        code = (FIRST_OF_TWO_WORKERS +
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters(),\n"
                "                               staleness=0)\n"
                "x = torch.randn(5, 3)\n"
                "m(x).sum().backward()\n"
                "# Late enough that the pushes are surely done: it lands in the pull's wait.\n"
                "threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
                "try:\n"
                "    opt.step()  # worker 1 never comes: the clock waits\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', flush=True)\n"
                "# The abandoned pull still writes them: their memory stays referenced (a GPU model's is not\n"
                "# registered; dropped, it went to other tensors, which the pull overwrote).\n"
                "held = {t.data_ptr() for kept in opt._abandoned_pulls for t in kept}\n"
                "print('parameters held', held == {p.data_ptr() for p in m.parameters()}, flush=True)\n"
                "opt.zero_grad()\n"
                "m(x).sum().backward()\n"
                "print('exiting', flush=True)\n")
        start = time.monotonic()
        p = run_code(code)
        took = time.monotonic() - start
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("interrupted\nparameters held True\nexiting", p.stdout, p.stderr)
        self.assertNotIn("Exception ignored", p.stderr)
        self.assertLess(took, 25, f"exit waited {took:.0f} s for pushes queued behind the abandoned clock")

    def test_a_backward_after_ctrl_c_in_a_broadcast_returns_at_once(self):
        # Its pushes queue behind the abandoned barrier: the backward waited for them, the whole timeout.
        code = (FIRST_OF_TWO_WORKERS +
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())\n"
                "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
                "try:\n"
                "    rps.broadcast_parameters(m.state_dict())  # worker 1 never comes: the barrier waits\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', flush=True)\n"
                "start = time.monotonic()\n"
                "m(torch.randn(5, 3)).sum().backward()\n"
                "print(f'backward took {time.monotonic() - start:.0f} s', flush=True)\n")
        p = run_code(code)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("interrupted\nbackward took ", p.stdout, p.stderr)
        took = float(re.search(r"backward took (\d+) s", p.stdout).group(1))
        self.assertLess(took, 20, "the backward waited for pushes queued behind the abandoned barrier")

    def test_a_push_that_failed_with_its_send_under_way_keeps_its_gradient(self):
        # As the module's buffers (test_module.py): a gradient whose push failed with its send under way (a
        # stopped server reads none of it) was let go, for the next backward to free while the send read it.
        server = ("import rdmaps\n"
                  "s = rdmaps.Server('127.0.0.1:0', workers=1, transport='tcp', log_connections=False,\n"
                  "                  rule_from_workers=True)\n"
                  "print(s.address, flush=True)\n"
                  "s.serve()\n")
        code = ("import os, signal, subprocess, sys, torch, rdmaps, rdmaps.torch as rps\n"
                "server = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE, text=True)\n"
                "os.environ.update(RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='2', RDMAPS_TRANSPORT='tcp',\n"
                "                  RDMAPS_SERVERS=server.stdout.readline().strip())\n"
                # 6 s: at 2 s a loaded machine's server answered the Hello too late (a clean clone, session 67).
                "rps.init(timeout=6)\n"
                "m = torch.nn.Linear(4096, 4096, bias=False)  # 64 MiB of gradient: more than the sockets hold\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.01), m.named_parameters())\n"
                "rps.broadcast_parameters(m.state_dict())\n"
                "os.kill(server.pid, signal.SIGSTOP)\n"
                "try:\n"
                "    for _ in range(4):\n"
                "        opt.zero_grad()\n"
                "        m(torch.randn(2, 4096)).sum().backward()\n"
                "        opt.step()\n"
                "except rdmaps.Error as e:\n"
                "    print('failed, still under way:', 'still under way' in str(e), flush=True)\n"
                "print('gradients kept:', len(opt._stranded), flush=True)\n"
                "os.kill(server.pid, signal.SIGCONT)\n"
                "server.kill()\n"
                "server.wait()\n"
                "try:\n"
                "    rps.shutdown()\n"
                "except rdmaps.Error:\n"
                "    pass\n"
                "print('after shutdown:', len(opt._stranded), flush=True)\n")
        p = run_code(code, server)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("failed, still under way: True\ngradients kept: 1\nafter shutdown: 0", p.stdout, p.stderr)

    def test_an_exception_a_signal_handler_raises_in_a_backward_ends_it_and_exit_as_ctrl_c_does(self):
        # The usual preemption pattern: a SIGTERM handler that raises (sys.exit, or an exception of the
        # trainer's). Only KeyboardInterrupt counted: the backward kept the exception for step() and returned,
        # and exit waited out the timeout for the pushes behind the abandoned wait.
        server = ("import rdmaps\n"
                  "s = rdmaps.Server('127.0.0.1:0', workers=1, transport='tcp', log_connections=False,\n"
                  "                  rule_from_workers=True)\n"
                  "print(s.address, flush=True)\n"
                  "s.serve()\n")
        code = ("import os, signal, subprocess, sys, threading, time, torch, rdmaps, rdmaps.torch as rps\n"
                "server = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE, text=True)\n"
                "print('server', server.pid, flush=True)\n"
                "os.environ.update(RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='2', RDMAPS_TRANSPORT='tcp',\n"
                "                  RDMAPS_SERVERS=server.stdout.readline().strip())\n"
                "rps.init(timeout=30)\n"
                "m = torch.nn.Linear(4096, 4096, bias=False)  # 64 MiB of gradient: more than the sockets hold\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.01), m.named_parameters())\n"
                "rps.broadcast_parameters(m.state_dict())\n"
                "class Preempted(Exception):\n"
                "    pass\n"
                "def preempted(*_):\n"
                "    raise Preempted()\n"
                "signal.signal(signal.SIGTERM, preempted)\n"
                "os.kill(server.pid, signal.SIGSTOP)  # the backward waits for its push\n"
                "threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
                "start = time.monotonic()\n"
                "try:\n"
                "    m(torch.randn(2, 4096)).sum().backward()\n"
                "    print('backward returned', flush=True)\n"
                "except Preempted:\n"
                "    print(f'backward raised Preempted after {time.monotonic() - start:.0f} s', flush=True)\n")
        start = time.monotonic()
        p = run_code(code, server, timeout=150)
        took = time.monotonic() - start
        found = re.search(r"server (\d+)", p.stdout)
        if found:
            os.kill(int(found.group(1)), signal.SIGKILL)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("backward raised Preempted after 1 s", p.stdout, p.stderr)
        self.assertNotIn("Exception ignored", p.stderr)
        # The 1 s, then the leave's bound (5 s) with the server stopped; the timeout alone is 30 s.
        self.assertLess(took, 25, f"exit waited {took:.0f} s for the push the handler's exception abandoned")

    def test_synchronize_from_another_thread_beside_training(self):
        # An evaluation thread (load_latest(), synchronize()) waited for the pushes beside the training
        # thread's backward: both took the same entry (IndexError in either thread, or a gradient let go while
        # its push read it).
        code = (ONLY_WORKER +
                "torch.manual_seed(0)\n"
                "m = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.01), m.named_parameters())\n"
                "rps.broadcast_parameters(m.state_dict())\n"
                "errors, done = [], threading.Event()\n"
                "def evaluate():\n"
                "    while not done.is_set():\n"
                "        try:\n"
                "            opt.synchronize()\n"
                "        except Exception as e:\n"
                "            errors.append(repr(e))\n"
                "evaluator = threading.Thread(target=evaluate)\n"
                "evaluator.start()\n"
                "for _ in range(50):\n"
                "    try:\n"
                "        opt.zero_grad()\n"
                "        m(torch.randn(16, 64)).pow(2).mean().backward()\n"
                "        opt.step()\n"
                "    except Exception as e:\n"
                "        errors.append(repr(e))\n"
                "done.set()\n"
                "evaluator.join()\n"
                "print('errors', len(errors), errors[:2], flush=True)\n"
                "print('pushes', opt.stats()['pushes'], flush=True)\n")
        p = run_code(code, timeout=150)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("errors 0 []", p.stdout, p.stderr)
        self.assertIn("pushes 50", p.stdout, p.stderr)  # a push a step (all 16 tensors): none lost

    def test_a_backward_through_a_graph_made_before_the_step_is_refused_as_torchs_sgd(self):
        # The step's pull wrote the parameters without autograd knowing: a retained graph's second backward
        # went through with the new weights (torch.optim.SGD's in-place update makes it an error).
        code = (ONLY_WORKER +
                "torch.manual_seed(0)\n"
                "m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())\n"
                "rps.broadcast_parameters(m.state_dict())\n"
                "before = [p._version for p in m.parameters()]\n"
                "loss = m(torch.randn(4, 8)).pow(2).mean()\n"
                "loss.backward(retain_graph=True)\n"
                "opt.step()\n"
                "print('versions moved', all(p._version > v for p, v in zip(m.parameters(), before)), flush=True)\n"
                "try:\n"
                "    loss.backward()\n"
                "    print('second backward went through', flush=True)\n"
                "except RuntimeError as e:\n"
                "    print('refused:', 'modified by an inplace operation' in str(e), flush=True)\n")
        p = run_code(code, timeout=150)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("versions moved True", p.stdout, p.stderr)
        self.assertIn("refused: True", p.stdout, p.stderr)

    def test_load_latest_into_a_copy_loads_it_and_leaves_the_trained_model_alone(self):
        # An evaluation thread had only load_latest(), which writes the weights the training thread computes with.
        code = (ONLY_WORKER +
                "import copy\n"
                "torch.manual_seed(0)\n"
                "m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))\n"
                "m[2].bias.requires_grad_(False)  # frozen: the trainer sets it (an EMA)\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters(),\n"
                "                               staleness=None)\n"
                "rps.broadcast_parameters(m.state_dict())\n"
                "for _ in range(3):\n"
                "    opt.zero_grad()\n"
                "    m(torch.randn(4, 8)).pow(2).mean().backward()\n"
                "    opt.step()\n"
                "with torch.no_grad():\n"
                "    m[2].bias.fill_(5.0)\n"
                "c = copy.deepcopy(m)\n"
                "with torch.no_grad():\n"
                "    for p in c.parameters():\n"
                "        p.fill_(-3.0)\n"
                "kept = [p.detach().clone() for p in m.parameters()]\n"
                "before, copy_before = [p._version for p in m.parameters()], [p._version for p in c.parameters()]\n"
                "bad = {'transposed': dict(c.named_parameters(), **{'0.weight': torch.zeros(8, 8).t()[:, :4]}),\n"
                "       'missing': {k: v for k, v in c.named_parameters() if k != '2.weight'},\n"
                "       'half': dict(c.named_parameters(), **{'0.bias': torch.zeros(8).half()}),\n"
                "       'itself': m, 'number': dict(c.named_parameters(), **{'0.bias': 1.0}), 'int': 3}\n"
                "for what, into in bad.items():\n"
                "    try:\n"
                "        opt.load_latest(into=into)\n"
                "        print(what, 'taken', flush=True)\n"
                "    except (TypeError, ValueError) as e:\n"
                "        print(what, 'refused:', e, flush=True)\n"
                "print('refusals wrote nothing', all(bool((p == -3).all()) for p in c.parameters()), flush=True)\n"
                "opt.load_latest(into=c)\n"
                "print('model kept', [p._version for p in m.parameters()] == before\n"
                "      and all(torch.equal(a, b) for a, b in zip(m.parameters(), kept)), flush=True)\n"
                "print('copy versions moved', all(p._version > v for p, v in zip(c.parameters(), copy_before)),\n"
                "      flush=True)\n"
                "print('frozen as the trainer set it', bool((c[2].bias == 5.0).all()), flush=True)\n"
                "opt.load_latest()  # the servers' parameters, into the model\n"
                "print('copy is the servers\\' model', all(torch.equal(a, b) for a, b in zip(m.parameters(),\n"
                "      c.parameters())), flush=True)\n"
                "rps.shutdown()\n")
        p = run_code(code)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertNotIn("taken", out, out + p.stderr)
        self.assertIn("transposed refused: rdmaps.torch: load_latest(into=)'s '0.weight' has shape (8, 4), the "
                      "parameter (8, 8)", out)
        self.assertIn("missing refused: rdmaps.torch: load_latest(into=) has no parameter named '2.weight'", out)
        self.assertIn("half refused: rdmaps.torch: load_latest(into=) tensor of '0.bias' is torch.float16", out)
        self.assertIn("itself refused: rdmaps.torch: load_latest(into=)'s '0.weight' is the trained model's own "
                      "parameter", out)
        self.assertIn("number refused: rdmaps.torch: load_latest(into=)'s '0.bias' is a float, not a tensor", out)
        self.assertIn("int refused: rdmaps.torch: load_latest(into=) of type int is not a module", out)
        for line in ("refusals wrote nothing True", "model kept True", "copy versions moved True",
                     "frozen as the trainer set it True", "copy is the servers' model True"):
            self.assertIn(line, out, out + p.stderr)

    def test_load_latest_into_a_copy_waits_for_no_other_worker(self):
        # load_latest() passes a barrier: from an evaluation thread it waited for every worker to call it too.
        code = (FIRST_OF_TWO_WORKERS +
                "import copy\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters(),\n"
                "                               staleness=None)\n"
                "m(torch.randn(5, 3)).sum().backward()\n"
                "opt.step()  # worker 1 never comes: async, it goes on\n"
                "c = copy.deepcopy(m)\n"
                "with torch.no_grad():\n"
                "    c.weight.fill_(7.0)\n"
                "start = time.monotonic()\n"
                "opt.load_latest(into=c)\n"
                "print(f'loaded in {time.monotonic() - start:.1f} s', flush=True)\n"
                "print('loaded', bool((c.weight != 7.0).all()), flush=True)\n")
        p = run_code(code)
        self.assertEqual(p.returncode, 0, p.stderr)
        took = re.search(r"loaded in ([0-9.]+) s", p.stdout)
        self.assertIsNotNone(took, p.stdout + p.stderr)
        self.assertLess(float(took.group(1)), 20, p.stdout)  # a barrier waits for worker 1: the 40 s timeout
        self.assertIn("loaded True", p.stdout, p.stderr)

    def test_a_refused_broadcast_sends_nothing(self):
        # Each entry was checked as it was sent: a refused bias left the weight set on the servers (the other
        # workers trained from that), and a transposed weight, as many elements, went through scrambled.
        code = (ONLY_WORKER +
                "m = torch.nn.Linear(3, 2)\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())\n"
                "half = dict(m.state_dict(), bias=m.bias.detach().half())\n"
                "transposed = dict(m.state_dict(), weight=m.weight.detach().t().contiguous())\n"
                "for bad, error in ((half, TypeError), (transposed, ValueError)):\n"
                "    try:\n"
                "        rps.broadcast_parameters(bad)\n"
                "    except error as e:\n"
                "        print('refused:', e, flush=True)\n"
                "opt.load_latest()\n"
                "print('nonzero', int(torch.count_nonzero(m.weight)) + int(torch.count_nonzero(m.bias)), flush=True)\n"
                "rps.shutdown()\n")
        p = run_code(code)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.count("refused:"), 2, p.stdout + p.stderr)
        self.assertIn("has shape (3, 2), parameter 'weight' (2, 3)", p.stdout)
        self.assertIn("nonzero 0", p.stdout, "a refused broadcast set parameters on the servers")

    def test_a_step_before_any_broadcast_is_warned_of(self):
        # Its pull replaced the model's initial values with the servers' zeros without a word.
        code = (ONLY_WORKER +
                "m = torch.nn.Linear(3, 2)\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())\n"
                "if sys.argv[1] == 'broadcast':\n"
                "    rps.broadcast_parameters(m.state_dict())\n"
                "for _ in range(2):\n"
                "    opt.zero_grad()\n"
                "    m(torch.randn(5, 3)).sum().backward()\n"
                "    opt.step()\n"
                "print('stepped', flush=True)\n")
        warning = "RuntimeWarning: rdmaps.torch: step() before broadcast_parameters()"
        for broadcast in (False, True):
            with self.subTest(broadcast=broadcast):
                p = run_code(code, "broadcast" if broadcast else "none")
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("stepped", p.stdout)
                self.assertEqual(p.stderr.count(warning), 0 if broadcast else 1, p.stderr)
                if not broadcast:  # at the caller's line, not in torch's wrappers of step()
                    self.assertRegex(p.stderr, r"<string>:\d+: " + re.escape(warning), p.stderr)

    def test_a_broadcast_keeps_the_model_the_servers_resumed(self):
        # The root's initial values went over the resumed model without a word.
        code = ("import os, sys, threading, torch, rdmaps, rdmaps.torch as rps\n"
                "s = rdmaps.Server('127.0.0.1:0', workers=1, transport='tcp', log_connections=False,\n"
                "                  rule_from_workers=True, checkpoint_dir=sys.argv[1], resume=sys.argv[2] == 'resume')\n"
                "served = threading.Thread(target=s.serve)\n"
                "served.start()\n"
                "os.environ.update(RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='2', RDMAPS_SERVERS=s.address,\n"
                "                  RDMAPS_TRANSPORT='tcp')\n"
                "rps.init(timeout=30)\n"
                "torch.manual_seed(len(sys.argv[2]))  # another start in each run\n"
                "m = torch.nn.Linear(3, 2)\n"
                "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())\n"
                "rps.broadcast_parameters(m.state_dict())\n"
                "print('after broadcast', m.weight.detach().flatten().tolist(), flush=True)\n"
                "if sys.argv[2] == 'train':\n"
                "    for _ in range(3):\n"
                "        opt.zero_grad()\n"
                "        m(torch.randn(5, 3)).sum().backward()\n"
                "        opt.step()\n"
                "    print('trained', m.weight.detach().flatten().tolist(), flush=True)\n"
                "rps.shutdown()\n"
                "served.join()\n")
        with tempfile.TemporaryDirectory() as directory:
            first = run_code(code, directory, "train")
            self.assertEqual(first.returncode, 0, first.stderr)
            trained = re.search(r"^trained (.*)$", first.stdout, re.M).group(1)
            resumed = run_code(code, directory, "resume")
            self.assertEqual(resumed.returncode, 0, resumed.stderr)
            self.assertIn(f"after broadcast {trained}\n", resumed.stdout)
            self.assertIn("the servers hold a model (resumed from a checkpoint", resumed.stderr)
            self.assertNotIn("the servers hold a model", first.stderr)

    def test_gradients_made_as_views_of_one_buffer_are_not_taken_for_changed(self):
        # torch.cat of parameters: autograd's gradients share a version counter, and a sibling's accumulation
        # in the same backward was taken for a change of a gradient already pushed.
        code = self.ONE_WORKER + (
            "import warnings\n"
            "warnings.simplefilter('always')\n"
            "a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))\n"
            "k = int(sys.argv[1])\n"
            "opt = rps.DistributedOptimizer(torch.optim.SGD([a, b], lr=0.01), [('a', a), ('b', b)],\n"
            "                               backward_passes_per_step=k)\n"
            "rps.broadcast_parameters({'a': a, 'b': b})\n"
            "for step in range(3):\n"
            "    opt.zero_grad(set_to_none=False)\n"
            "    for _ in range(k):\n"
            "        (torch.cat([a, b]) * torch.randn(8)).sum().backward()\n"
            "    opt.step()\n"
            "print('stepped', flush=True)\n")
        for passes in ("1", "2"):
            with self.subTest(backward_passes_per_step=passes):
                p = run_code(code, passes)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("stepped", p.stdout)
                self.assertNotIn("changed after backward() pushed it", p.stderr)

    ONE_WORKER = ("import os, sys, threading, torch, rdmaps, rdmaps.torch as rps\n"
                  "s = rdmaps.Server('127.0.0.1:0', workers=1, transport='tcp', log_connections=False,\n"
                  "                  rule_from_workers=True)\n"
                  "threading.Thread(target=s.serve, daemon=True).start()\n"
                  "os.environ.update(RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='2', RDMAPS_SERVERS=s.address,\n"
                  "                  RDMAPS_TRANSPORT='tcp')\n"
                  "rps.init(timeout=30)\n")

    def test_a_parameter_frozen_when_the_optimizer_was_made_keeps_what_the_trainer_sets(self):
        # An EMA teacher in the optimizer's parameters: every step's pull put the broadcast value back.
        code = self.ONE_WORKER + (
            "student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)\n"
            "teacher.requires_grad_(False)\n"
            "named = [('s.' + n, p) for n, p in student.named_parameters()] + \\\n"
            "        [('t.' + n, p) for n, p in teacher.named_parameters()]\n"
            "opt = rps.DistributedOptimizer(torch.optim.SGD([p for _, p in named], lr=0.1), named)\n"
            "with torch.no_grad():\n"
            "    teacher.weight.fill_(3.0)\n"
            "if sys.argv[1] == 'broadcast':\n"
            "    rps.broadcast_parameters(dict(named))\n"
            "    assert torch.all(teacher.weight == 3.0), 'the broadcast did not load the frozen parameter'\n"
            "before = student.weight.clone()\n"
            "for step in range(3):\n"
            "    opt.zero_grad()\n"
            "    student(torch.ones(4, 3)).sum().backward()\n"
            "    opt.step()\n"
            "    if step == 0 and sys.argv[1] == 'joined':  # a worker that joined a job: the job's values, once\n"
            "        assert torch.all(teacher.weight == 0.0), 'the first pull did not load the frozen parameter'\n"
            "    with torch.no_grad():\n"
            "        teacher.weight.mul_(0.5).add_(0.5 * student.weight)\n"
            "        ema = teacher.weight.clone()\n"
            "    opt.zero_grad()\n"
            "    student(torch.ones(4, 3)).sum().backward()\n"
            "    opt.step()\n"
            "    assert torch.equal(teacher.weight, ema), f'step {step}: the frozen parameter was overwritten'\n"
            "assert not torch.equal(before, student.weight), 'the student did not train'\n"
            "print('frozen kept', flush=True)\n")
        for how in ("broadcast", "joined"):
            with self.subTest(how=how):
                p = run_code(code, how)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("frozen kept", p.stdout)

    def test_shutdown_raises_what_a_backward_hook_met_whatever_its_kind(self):
        # A sparse gradient's TypeError, with no step() after the backward: shutdown() dropped it.
        code = self.ONE_WORKER + (
            "m = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Flatten(),\n"
            "                        torch.nn.Linear(8, 3))\n"
            "opt = rps.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())\n"
            "rps.broadcast_parameters(m.state_dict())\n"
            "m(torch.tensor([[1, 2]])).sum().backward()\n"
            "try:\n"
            "    rps.shutdown()\n"
            "except TypeError as e:\n"
            "    print('shutdown raised:', e, flush=True)\n")
        p = run_code(code)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("shutdown raised: rdmaps.torch: gradient of '0.weight' has layout torch.sparse_coo", p.stdout)

    def test_ctrl_c_ends_init_waiting_for_a_rank_0_that_never_comes(self):
        # The rendezvous waited without looking for signals: Ctrl-C was taken after the whole timeout (300 s).
        code = ("import os, signal, threading, time, rdmaps.torch as rps\n"
                "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
                "start = time.monotonic()\n"
                "try:\n"
                "    rps.init(timeout=60)\n"
                "except KeyboardInterrupt:\n"
                "    print(f'interrupted after {time.monotonic() - start:.1f} s', flush=True)\n")
        env = dict(os.environ, RDMAPS_RANK="1", RDMAPS_WORLD_SIZE="3", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()), RDMAPS_SECRET=secrets.token_hex(32))
        p = run_code(code, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        said = re.search(r"interrupted after ([0-9.]+) s", p.stdout)
        self.assertIsNotNone(said, p.stdout + p.stderr)
        self.assertLess(float(said.group(1)), 10, "init() took Ctrl-C only at its timeout")

    def test_a_rate_set_between_backward_and_step_is_said_to_apply_from_the_next_step(self):
        self.run_mode("late-lr", "tcp")

    def test_every_rank_serves_metrics_given_to_init(self):
        # metrics= was a server-only option: given to init() it started the servers' endpoint, then
        # every worker refused it ("unknown configuration option '--metrics'").
        # Rank r on PORT+r, as the C++ programs: an rdmaps-server rank and the workers of one launch took one port.
        # Two ports free below the ephemeral range: PORT+1 next to a bind(0) port was taken by another test's
        # connection once, rank 1 failed, and rank 0's server waited for it until the job's timeout.
        sys.path.insert(0, os.path.join(HERE, "..", "common"))
        import free_ports
        port = free_ports.first_free(2)
        results = run_job("torchrun", 2, [JOB, "metrics"], {"RDMAPS_TRANSPORT": "tcp", "METRICS_PORT": str(port)})
        self.assert_all_ok(results)
        self.assertIn("metrics ok", results[1][1])
        self.assertIn("rank 0 serves on port ", results[0][1])
        self.assertIn(f" for 1 worker(s), metrics at 127.0.0.1:{port}\n", results[0][1])

    def test_init_refuses_what_the_optimizer_decides(self):
        # Servers adopt the first worker's rule and bound: init(staleness=3) would train BSP without a word.
        import rdmaps.torch as rps
        for options, text in (({"staleness": 3}, "staleness=3 is set by DistributedOptimizer(staleness=)"),
                              ({"lr": 0.5}, "lr=0.5 is set by the wrapped torch.optim.SGD's lr"),
                              ({"config": {"lambda0": 8}}, "lambda0=8 is set by DistributedOptimizer(lambda_=)"),
                              ({"rule": "sgd"}, "rule='sgd' is set by DistributedOptimizer(dc=)")):
            with self.subTest(options=options):
                with self.assertRaises(ValueError) as caught:
                    rps.init(env={"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                  "MASTER_PORT": str(free_port())}, timeout=1, **options)
                self.assertIn(f"rdmaps.torch.init: {text}", str(caught.exception))
                self.assertFalse(rps.is_initialized())  # refused before anything: a corrected call may follow
        with self.assertRaises(TypeError):
            rps.init(config="--staleness 3")
        with self.assertRaisesRegex(TypeError, "rdmaps.torch.init: metrics=9464 is not a \"HOST:PORT\" string"):
            rps.init(metrics=9464)
        # Found by the optimizer's Worker, with init() spent (a server rank died inside it).
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "rdmaps.torch.init: metrics: address 'nope' has no port"):
            rps.init(env={"RANK": "1", "WORLD_SIZE": "2", "RDMAPS_SERVERS": "127.0.0.1:9"}, metrics="nope")
        self.assertFalse(rps.is_initialized())
        # A timeout no wait can take: refused before init() is spent (it was found by the optimizer's Worker,
        # after init() had locked in, or made -9223 s of inf).
        env = {"RANK": "1", "WORLD_SIZE": "2", "RDMAPS_SERVERS": "127.0.0.1:9"}
        for timeout, error in ((-1, ValueError), (0, ValueError), (float("inf"), ValueError), (float("nan"), ValueError),
                               (None, TypeError), ("long", TypeError)):
            with self.subTest(timeout=timeout):
                with self.assertRaisesRegex(error, r"rdmaps.torch.init: timeout=.* is not a number of seconds"):
                    rps.init(env=env, timeout=timeout)
                self.assertFalse(rps.is_initialized())

    def test_the_optimizer_refuses_what_it_cannot_train_before_connecting(self):
        import numpy as np
        import rdmaps.torch as rps
        with tempfile.TemporaryDirectory() as folder:  # an embedding mapped read-only from its .npy
            np.save(os.path.join(folder, "emb.npy"), np.zeros(4, dtype=np.float32))
            array = np.load(os.path.join(folder, "emb.npy"), mmap_mode="r")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own: "The given NumPy array is not writable"
            frozen = torch.nn.Parameter(torch.from_numpy(array), requires_grad=False)
        trained = torch.nn.Parameter(torch.zeros(3))
        # A pull into it was a segmentation fault.
        with self.assertRaisesRegex(ValueError, "parameter 'frozen' lies in read-only memory"):
            rps.DistributedOptimizer(torch.optim.SGD([frozen, trained], lr=0.1),
                                     [("frozen", frozen), ("trained", trained)], flat_parameters=False)
        with self.assertRaisesRegex(TypeError, "wrap a torch.optim.SGD instance .* not generator"):
            rps.DistributedOptimizer(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        # Found after connecting, it left the parameters inference tensors and the job a goodbye short.
        with torch.inference_mode():
            with self.assertRaisesRegex(RuntimeError, "made under torch.inference_mode"):
                rps.DistributedOptimizer(torch.optim.SGD([trained], lr=0.1))
        self.assertFalse(trained.is_inference())
        with self.assertRaisesRegex(TypeError, "lambda_='x' is not a number"):
            rps.DistributedOptimizer(torch.optim.SGD([trained], lr=0.1), dc=True, lambda_="x")
        with self.assertRaisesRegex(TypeError, "named_parameters of type dict is not \\(name, parameter\\) pairs"):
            rps.DistributedOptimizer(torch.optim.SGD([trained], lr=0.1), {"trained": trained})

    def test_init_places_ranks_from_each_launchers_variables(self):
        # Two servers, two workers, rendezvous through rank 0's store.
        for style in ("openmpi", "pmi", "slurm"):
            with self.subTest(launcher=style):
                results = run_job(style, 4, [JOB, "roles"],
                                  {"RDMAPS_NUM_SERVERS": "2", "RDMAPS_TRANSPORT": "shm"})
                self.assert_all_ok(results)
                for rank in (0, 1):
                    self.assertRegex(results[rank][1], rf"rank {rank} serves on port \d+ for 2 worker")
                    self.assertRegex(results[rank][1], rf"server {rank} done: [1-9]\d* pushes")
                for rank in (2, 3):
                    self.assertIn(f"role worker {rank - 2} of 2 from {style}", results[rank][1])

    def test_example_reaches_85_percent_with_one_server_and_two_workers(self):
        results = run_job("torchrun", 3, [EXAMPLE, "--expect-accuracy", "0.85"])
        self.assert_all_ok(results)
        accuracy = float(re.search(r'"test_accuracy": ([0-9.]+)', results[1][1]).group(1))
        self.assertGreaterEqual(accuracy, 0.85)
        steps = [int(re.search(r'"steps": (\d+)', out).group(1)) for _, out in results[1:]]
        self.assertEqual(steps, [3750, 3750])  # 4 epochs of 60,000 in batches of 32 over 2 workers


if __name__ == "__main__":
    unittest.main()
