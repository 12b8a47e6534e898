"""rdmaps: a parameter server for asynchronous training over one-sided RDMA (UCX).

Worker and Server wrap the C++ classes of the same names (include/rdmaps/).
Data crosses as float32 buffers without copies; waits release the GIL.
For PyTorch, use rdmaps.torch.
"""

import atexit
import json
import logging
import math

from . import _rdmaps
from ._rdmaps import Error, InvalidArgument, PeerGone, Timeout, __version__, have_cuda

__all__ = ["Error", "InvalidArgument", "PeerGone", "Timeout", "Worker", "Server", "config_flags", "describe_config",
           "info", "set_log_level", "log_to_python"]

_PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def set_log_level(level):
    """The library's log threshold: "debug", "info", "warn", "error" or "off"
    (default: RDMAPS_LOG_LEVEL, else "info")."""
    _rdmaps._set_log_level(level)


def log_to_python(logger="rdmaps"):
    """Sends the library's log lines (servers, workers, transport) to a Python
    logger (a name or a logging.Logger) instead of stderr; None sends them back."""
    if logger is None:
        _rdmaps._set_log_handler(None)
        return
    target = logging.getLogger(logger) if isinstance(logger, str) else logger
    _rdmaps._set_log_handler(lambda level, line: target.log(_PY_LEVELS.get(level, logging.INFO), line))


# Library threads must not call into an interpreter that is shutting down.
atexit.register(_rdmaps._set_log_handler, None)


def config_flags(config=None, **options):
    """Configuration as rdmaps flags: {"staleness": 3, "lambda0": 2} -> ["--staleness", "3", "--lambda0", "2"].

    Keys are the flag names of `rdmaps-server --help` with "_" for "-" (a trailing
    "_" is dropped: lambda_); True/False become on/off, infinity "inf"; None is left out.
    """
    merged = dict(config or {})
    merged.update(options)
    flags = []
    for key, value in merged.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, float) and math.isinf(value):
            text = "inf"
        else:
            text = str(value)
        flags += ["--" + key.rstrip("_").replace("_", "-"), text]
    return flags


def info():
    """What this machine offers rdmaps, as `rdmaps-info --json` reports it: UCX
    version and memory types, RDMA ports, CUDA devices, peer memory, GPU path."""
    return json.loads(_rdmaps._capabilities_json())


def describe_config(config=None, **options):
    """The configuration these options and the RDMAPS_* variables give, one field per line."""
    return _rdmaps.describe_config(config_flags(config, **options))


def _server_list(servers):
    if isinstance(servers, str):
        servers = [s for s in servers.split(",") if s]
    return list(servers)


class Worker(_rdmaps.Worker):
    """A worker's connection to the servers.

    Worker(servers, worker, config=None, timeout=60, **options): servers is
    "host:port,host:port" or a list in server-index order; options as in
    config_flags. declare() every tensor, connect(), then push/pull/clock with
    float32 C-contiguous buffers (numpy arrays, array.array('f'), ...).
    register_memory(buffer) lets pulls into that buffer land in place (by
    message over tcp, by put where put_landing allows), before or after
    connect(); the worker holds it until close().
    metrics="HOST:PORT" serves its counters for Prometheus at /metrics
    (docs/observability.md; metrics_address is the bound one).
    """

    def __init__(self, servers, worker, config=None, *, timeout=60.0, metrics=None, **options):
        super().__init__(_server_list(servers), int(worker), config_flags(config, **options), float(timeout),
                         metrics or "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Server(_rdmaps.Server):
    """A parameter server: Server(listen="0.0.0.0:0", index=0, servers=1, workers=1, config=None, **options).

    serve() runs until every worker left (or stop(), or Ctrl-C); address is the
    bound host:port. rule_from_workers=True adopts the first worker's update rule.
    Off loopback it needs a shared secret (RDMAPS_SECRET or secret_file=...)
    unless insecure=True (docs/security.md). metrics="HOST:PORT" serves Prometheus
    metrics at /metrics (docs/observability.md; metrics_address is the bound one).
    """

    def __init__(self, listen="0.0.0.0:0", index=0, servers=1, workers=1, config=None, *, rule_from_workers=False,
                 log_connections=True, stats_interval=0.0, exit_when_done=True, insecure=False, metrics=None,
                 **options):
        super().__init__(listen, int(index), int(servers), int(workers), config_flags(config, **options),
                         bool(rule_from_workers), bool(log_connections), float(stats_interval), bool(exit_when_done),
                         bool(insecure), metrics or "")
