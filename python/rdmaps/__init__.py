"""rdmaps: a parameter server for asynchronous training over one-sided RDMA (UCX).

Worker and Server wrap the C++ classes of the same names (include/rdmaps/).
Data crosses as float32 buffers without copies; waits release the GIL.
For PyTorch, use rdmaps.torch.
"""

import atexit
import collections.abc
import json
import logging
import math
import operator
import os
import weakref

from . import _rdmaps
from ._rdmaps import Error, InvalidArgument, PeerGone, RefusedForNow, Timeout, __version__, have_cuda

__all__ = ["Error", "InvalidArgument", "PeerGone", "RefusedForNow", "Timeout", "Worker", "Server", "config_flags",
           "describe_config", "info", "set_log_level", "log_to_python"]

_PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_NAMED_LEVELS = {number: name for name, number in _PY_LEVELS.items()}


def set_log_level(level):
    """The library's log threshold: "debug", "info", "warn", "error" or "off"
    (default: RDMAPS_LOG_LEVEL, else "info"), or logging's DEBUG, INFO, WARNING, ERROR."""
    if isinstance(level, int) and not isinstance(level, bool) and level in _NAMED_LEVELS:
        level = _NAMED_LEVELS[level]
    if not isinstance(level, str):  # pybind11's message listed signatures, not the levels
        raise TypeError(f"rdmaps.set_log_level: {level!r} is not \"debug\", \"info\", \"warn\", \"error\", "
                        "\"off\" or one of logging.DEBUG, INFO, WARNING, ERROR")
    _rdmaps._set_log_level(level)


def log_to_python(logger="rdmaps"):
    """Sends the library's log lines (servers, workers, transport) to a Python
    logger (a name or a logging.Logger) instead of stderr; None sends them back."""
    if logger is None:
        _rdmaps._set_log_handler(None)
        return
    if isinstance(logger, str):
        target = logging.getLogger(logger)
    elif callable(getattr(logger, "log", None)):
        target = logger
    else:  # checked here: a bad target would lose every log line to a traceback in the library's threads
        raise TypeError(f"rdmaps.log_to_python: {logger!r} is not a logger name, a logging.Logger or None")
    _rdmaps._set_log_handler(lambda level, line: target.log(_PY_LEVELS.get(level, logging.INFO), line))


# Library threads must not call into an interpreter that is shutting down.
atexit.register(_rdmaps._set_log_handler, None)

# Workers not closed yet, closed at exit before the interpreter finalizes (and
# before the log handler goes: atexit runs the last registered first). A
# daemon thread still in a call (a clock held by a straggler, a stats() loop)
# then gets 'cancelled' and the goodbye goes out; left to finalization, such
# a worker stayed referenced by that thread and the servers logged it as died.
_open_workers = weakref.WeakSet()


def _close_open_workers():
    for worker in list(_open_workers):
        worker.close()


atexit.register(_close_open_workers)


def _options(config):
    """config as a new dict, or a clear error (a flag string is a common slip)."""
    if config is not None and not isinstance(config, collections.abc.Mapping):
        raise TypeError(f"rdmaps: config={config!r} is not a dict of options such as {{'lr': 0.1}}; options "
                        "may also be keywords (lr=0.1)")
    return dict(config or {})


def config_flags(config=None, **options):
    """Configuration as rdmaps flags: {"staleness": 3, "lambda0": 2} -> ["--staleness", "3", "--lambda0", "2"].

    Keys are the flag names of `rdmaps-server --help` with "_" for "-" (a trailing
    "_" is dropped: lambda_); True/False become on/off, infinity "inf"; None is left out.
    """
    merged = _options(config)
    merged.update(options)
    flags = []
    for key, value in merged.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, float) and math.isinf(value):
            text = "inf" if value > 0 else "-inf"  # the flag's own check refuses -inf, naming it
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


def _as_int(value):
    """value as an int where it is a whole number's type (numpy's integers too), else None: not True, 2.5, "3",
    nor a tensor of 2.5, which int() would make 2."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _checked_count(where, name, value, most):
    """value as an int in 0..most, or an error naming the argument (pybind11's
    own would list every signature instead)."""
    number = _as_int(value)
    if number is None or not 0 <= number <= most:
        raise (ValueError if isinstance(number, int) else TypeError)(
            f"{where}: {name}={value!r} is not a whole number from 0 to {most}")
    return number


def _checked_bool(where, name, value):
    """value if it is True or False: bool("off") is True, and insecure="off"
    served off loopback without a secret."""
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name}={value!r} is not True or False")
    return value


def _checked_address(where, name, value, optional):
    """value if it is a "HOST:PORT" string (None or "" where `optional`), else an error naming the argument:
    metrics=0 turned metrics off without a word, metrics=9464 listed pybind11's signatures."""
    if optional and value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name}={value!r} is not a \"HOST:PORT\" string" + (" or None" if optional else ""))
    return value


def _checked_seconds(where, name, value):
    """value as a float, or an error naming the argument (float()'s own names none)."""
    if isinstance(value, bool):
        raise TypeError(f"{where}: {name}={value!r} is not a number of seconds")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name}={value!r} is not a number of seconds") from None


_U32 = 2**32 - 1
_U64 = 2**64 - 1
_FLOAT32_MAX = 3.4028234663852886e38  # pushes carry the learning rate as a float32


def _server_list(servers):
    # Each entry as typed, checked as RDMAPS_SERVERS and the C API check theirs: an empty one was dropped
    # ("a:1,,b:2" named b as server 1), a malformed one found only at connect().
    if isinstance(servers, str):
        return _rdmaps._server_list(servers, "rdmaps.Worker: servers")
    try:
        listed = list(servers)
    except TypeError:
        listed = None
    if listed is None or not all(isinstance(s, str) for s in listed):
        raise TypeError(f"rdmaps.Worker: servers={servers!r} is not \"host:port,...\" or a list of them")
    _rdmaps._check_server_list(listed, "rdmaps.Worker: servers")
    return listed


class Worker(_rdmaps.Worker):
    """A worker's connection to the servers.

    Worker(servers, worker, config=None, *, timeout=60, metrics=None, **options): servers is
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
        # Ids below kMaxWorkers (rdmaps/server.h), as the C API checks: a server refuses a larger one only at
        # connect(), as a protocol error.
        super().__init__(_server_list(servers), _checked_count("rdmaps.Worker", "worker", worker,
                                                               _rdmaps._max_workers - 1),
                         config_flags(config, **options), _checked_seconds("rdmaps.Worker", "timeout", timeout),
                         _checked_address("rdmaps.Worker", "metrics", metrics, optional=True))
        _open_workers.add(self)

    def declare(self, name, floats):
        super().declare(name, _checked_count("rdmaps.Worker.declare", f"floats of '{name}'", floats, _U64))

    def wait(self, ticket):
        super().wait(_checked_count("rdmaps.Worker.wait", "ticket", ticket, _U64))

    def set_learning_rate(self, lr):
        # Anything float() takes (a 0-d tensor or array too), but not a bool or a string.
        if lr is not None:
            try:
                if isinstance(lr, (bool, str, bytes)):
                    raise TypeError
                lr = float(lr)
            except (TypeError, ValueError):
                raise TypeError(f"rdmaps.Worker.set_learning_rate: lr={lr!r} is not a number or None") from None
            # Carried as a float32: a larger one became inf, and the error named inf, not this.
            if math.isfinite(lr) and abs(lr) > _FLOAT32_MAX:
                raise ValueError(f"rdmaps.Worker.set_learning_rate: lr={lr!r} is past the largest float32 "
                                 f"({_FLOAT32_MAX:g}): pushes carry the rate as one")
        super().set_learning_rate(lr)

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
    max_bytes caps the table a first worker may declare (0: the machine's memory;
    default RDMAPS_MAX_BYTES), stall_warning logs a worker that holds the
    slowest clock this many seconds (0: off), as rdmaps-server's flags of those names.
    """

    def __init__(self, listen="0.0.0.0:0", index=0, servers=1, workers=1, config=None, *, rule_from_workers=False,
                 log_connections=True, stats_interval=0.0, exit_when_done=True, insecure=False, metrics=None,
                 max_bytes=None, stall_warning=0.0, **options):
        where = "max_bytes"
        if max_bytes is None:  # as rdmaps-server: the variable is the default
            where, text = "RDMAPS_MAX_BYTES", os.environ.get("RDMAPS_MAX_BYTES", "0")
            if not (text.isascii() and text.isdigit()):  # str.isdigit() takes full-width digits
                raise ValueError(f"rdmaps.Server: RDMAPS_MAX_BYTES={text!r} is not a whole number of bytes")
            max_bytes = int(text)
        counts = [_checked_count("rdmaps.Server", name, value, _U32)
                  for name, value in (("index", index), ("servers", servers), ("workers", workers))]
        switches = [_checked_bool("rdmaps.Server", name, value)
                    for name, value in (("rule_from_workers", rule_from_workers), ("log_connections", log_connections),
                                        ("exit_when_done", exit_when_done), ("insecure", insecure))]
        seconds = [_checked_seconds("rdmaps.Server", name, value)
                   for name, value in (("stats_interval", stats_interval), ("stall_warning", stall_warning))]
        super().__init__(_checked_address("rdmaps.Server", "listen", listen, optional=False), *counts,
                         config_flags(config, **options), switches[0], switches[1], seconds[0], switches[2],
                         switches[3], _checked_address("rdmaps.Server", "metrics", metrics, optional=True),
                         _checked_count("rdmaps.Server", where, max_bytes, _U64), seconds[1])
