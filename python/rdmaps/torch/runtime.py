"""init(), shutdown() and broadcast_parameters(): the process-wide side of rdmaps.torch."""

import atexit
import collections.abc
import datetime
import os
import sys

import torch

import rdmaps
from rdmaps import launcher

_placement = None
_servers = None  # host:port of every server, in index order (workers)
_store = None  # rendezvous store; rank 0 hosts it
_optimizer = None  # the DistributedOptimizer that owns this worker's connection
_options = {}  # rdmaps configuration from init()
_metrics = None  # "HOST:PORT" every rank serves GET /metrics at, from init()
_timeout = 300.0  # seconds, for the rendezvous and every network wait
_left = False  # shutdown() was called: this process left the job

# Options the DistributedOptimizer decides: servers adopt the first worker's
# rule and bound, so given anywhere else they would be dropped without a word.
DECIDED_BY_OPTIMIZER = {
    "lr": "the wrapped torch.optim.SGD's lr", "momentum": "the wrapped torch.optim.SGD's momentum",
    "rule": "DistributedOptimizer(dc=) and the wrapped optimizer's momentum",
    "lambda0": "DistributedOptimizer(lambda_=)", "lambda": "DistributedOptimizer(lambda_=)",
    "lambda_": "DistributedOptimizer(lambda_=)", "staleness": "DistributedOptimizer(staleness=)"}


def refuse_decided(where, options):
    """A clear error for an option the DistributedOptimizer sets (it would be overwritten)."""
    clash = [key for key in options if key in DECIDED_BY_OPTIMIZER]
    if clash:
        raise ValueError(f"{where}: {clash[0]}={options[clash[0]]!r} is set by {DECIDED_BY_OPTIMIZER[clash[0]]}, "
                         "not as an option")


def _store_key(index):
    return f"server/{index}"


def _uses_agent_store(p, env):
    """Under torchrun whose agent serves its own store at MASTER_PORT (and no
    RDMAPS_MASTER_PORT moves rdmaps' rendezvous elsewhere), that store carries
    the addresses where the launch has a rendezvous at all; every other launch
    uses the C++ tools' exchange."""
    return (env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and not env.get("RDMAPS_MASTER_PORT")
            and not p.servers and not p.pmix)


def _open_agent_store(p, timeout):
    store = torch.distributed.TCPStore(p.master_addr, p.master_port, p.world_size, False,
                                       datetime.timedelta(seconds=timeout), wait_for_workers=False)
    # A restarted torchrun job must not read the previous run's addresses.
    return torch.distributed.PrefixStore(f"rdmaps/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init(num_servers=None, *, config=None, timeout=300.0, env=None, metrics=None, **options):
    """Joins the job. Server ranks serve until every worker left, then exit the
    process (sys.exit(0)); worker ranks return and train.

    num_servers: default RDMAPS_NUM_SERVERS, or the length of RDMAPS_SERVERS, or 1.
    config/options: rdmaps configuration (transport, shard_floats, ...; see
    rdmaps.config_flags); the update rule (lr, momentum, rule, lambda) and the
    staleness bound come from the DistributedOptimizer and are refused here.
    timeout: seconds to wait for the rendezvous and for every network wait.
    metrics: "HOST:PORT" where each rank serves Prometheus metrics (a server's
    rdmaps.Server, a worker's DistributedOptimizer): rank r on PORT+r, as the
    C++ programs under a launcher; port 0 picks a free one for each (a server
    rank prints it, a worker's is opt.metrics_address).
    """
    global _placement, _servers, _store, _options, _timeout, _metrics
    if _placement is not None:
        raise RuntimeError("rdmaps.torch.init() was already called" +
                           (", and shutdown() left the job: a process joins one job" if _left else ""))
    # Checked first: a bad one was found only by the optimizer's Worker, with init() already spent.
    seconds = rdmaps._checked_seconds("rdmaps.torch.init", "timeout", timeout)
    if not 0.001 <= seconds <= 1e9:
        raise ValueError(f"rdmaps.torch.init: timeout={timeout!r} is not a number of seconds from 0.001 to 1e9")
    given = dict(rdmaps._options(config), **options)
    refuse_decided("rdmaps.torch.init", given)  # before any rank serves or waits
    if "metrics" in given:  # from config=: a rank's own endpoint, not a configuration flag
        from_config = given.pop("metrics")
        metrics = from_config if metrics is None else metrics
    if metrics is not None and not isinstance(metrics, str):
        raise TypeError(f"rdmaps.torch.init: metrics={metrics!r} is not a \"HOST:PORT\" string or None")
    if metrics:  # else refused only by the optimizer's Worker, with init() already spent (a server rank died in it)
        rdmaps._rdmaps._check_address(metrics, "rdmaps.torch.init: metrics")
    p = launcher.detect(env, num_servers)
    if metrics:
        # Rank r serves on PORT+r, as rdmaps-server and rdmaps-train do under a launcher: ranks sharing a host
        # (an rdmaps-server beside the Python workers of one mpirun) took the same port and the workers failed.
        host, _, port = metrics.rpartition(":")
        if int(port):
            if int(port) + p.rank > 65535:
                raise ValueError(f"rdmaps.torch.init: metrics={metrics!r}: rank {p.rank} serves on port "
                                 f"{port}+{p.rank}, past 65535")
            metrics = f"{host}:{int(port) + p.rank}"
    _options = given
    _timeout = seconds
    _metrics = metrics or None
    environment = dict(os.environ if env is None else env)
    if p.role == "server":
        _serve(p, _timeout, environment)
        sys.exit(0)
    if _uses_agent_store(p, environment):
        _store = _open_agent_store(p, _timeout)
        keys = [_store_key(i) for i in range(p.num_servers)]
        _store.wait(keys)
        _servers = [_store.get(k).decode() for k in keys]
    else:
        _servers = rdmaps._rdmaps._ServerDirectory(launcher.c_environment(environment), p.num_servers, _timeout,
                                                   rdmaps.config_flags(given)).exchange("")
    _placement = p
    atexit.register(shutdown)
    return p


def _serve(p, timeout, environment):
    directory = (None if _uses_agent_store(p, environment)
                 else rdmaps._rdmaps._ServerDirectory(launcher.c_environment(environment), p.num_servers, timeout,
                                                      rdmaps.config_flags(_options)))
    server = rdmaps.Server(directory.listen_address() if directory else "0.0.0.0:0", index=p.rank,
                           servers=p.num_servers, workers=p.num_workers, rule_from_workers=True, metrics=_metrics,
                           **_options)
    port = server.address.rpartition(":")[2]
    store = None
    if directory:  # rank 0 hosts the rendezvous (if the launch uses one) until the server is done
        directory.exchange(server.address)
    else:
        store = _open_agent_store(p, timeout)
        store.set(_store_key(p.rank), rdmaps._rdmaps._advertised_address(launcher.c_environment(environment),
                                                                          p.num_servers, server.address))
    print(f"rdmaps.torch: rank {p.rank} serves on port {port} for {p.num_workers} worker(s)" +
          (f", metrics at {server.metrics_address}" if _metrics else ""), file=sys.stderr, flush=True)
    server.serve()
    s = server.stats()
    print(f"rdmaps.torch: server {p.rank} done: {s['pushes']} pushes, {s['pulls']} pulls, {s['clocks']} clocks, "
          f"{s['rejected']} rejected", file=sys.stderr, flush=True)
    del store, directory


def is_initialized():
    return _placement is not None


def placement():
    """This worker's launcher.Placement (after init())."""
    _require_init("placement")
    return _placement


def rank():
    """This worker's index among the workers (0 .. size()-1)."""
    return placement().worker_index


def size():
    """Number of workers."""
    return placement().num_workers


def _require_init(what):
    if _placement is None:
        raise RuntimeError(f"rdmaps.torch.{what}: call rdmaps.torch.init() first")


def _worker_connection():
    """Hands the optimizer what it needs to connect (servers, worker index,
    configuration, timeout); one optimizer per process."""
    _require_init("DistributedOptimizer")
    if _left:
        raise RuntimeError("rdmaps.torch.DistributedOptimizer after shutdown(): this process left the job (its "
                           "servers end once every worker left)")
    if _optimizer is not None:
        raise RuntimeError("rdmaps.torch: a DistributedOptimizer already exists in this process; the servers keep "
                           "one set of tensors per job")
    return _servers, _placement.worker_index, dict(_options), _timeout, _metrics


def _adopt(optimizer):
    """The optimizer connected: it is this process's, and shutdown() closes it."""
    global _optimizer
    _optimizer = optimizer


def broadcast_parameters(state_dict, root_rank=0):
    """Sets the servers' parameters to root_rank's values, then every worker
    loads them, so all start from the same point. Entries that are not
    parameters of the DistributedOptimizer (buffers) stay per worker."""
    _require_init("broadcast_parameters")
    if _left:
        raise RuntimeError("rdmaps.torch.broadcast_parameters after shutdown(): this process left the job")
    if _optimizer is None:
        raise RuntimeError("rdmaps.torch.broadcast_parameters: create the DistributedOptimizer first (it declares "
                           "the tensors the servers keep)")
    index = rdmaps._as_int(root_rank)
    if index is None or not 0 <= index < size():
        raise ValueError(f"root_rank {root_rank!r} is not a worker rank (0..{size() - 1})")
    if not isinstance(state_dict, collections.abc.Mapping):
        raise TypeError(f"rdmaps.torch.broadcast_parameters: state_dict is {type(state_dict).__name__}, not a "
                        "mapping of names to tensors (model.state_dict())")
    _optimizer._broadcast(state_dict, rank() == index)


def shutdown():
    """Leaves the job: waits for this worker's outstanding operations and tells the servers.
    Raises if a push could not be sent (a server died), after leaving all the same."""
    global _optimizer, _left
    _left = _placement is not None
    if _optimizer is not None:
        optimizer, _optimizer = _optimizer, None  # left even if closing raises: atexit must not try again
        optimizer._close()
