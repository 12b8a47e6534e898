"""Where this process stands in a job: rank, world size and role, read from the
variables launchers already set.

Order (the first launcher with either variable set wins, and half a pair is
an error): RDMAPS_RANK/RDMAPS_WORLD_SIZE; torchrun (RANK/WORLD_SIZE); Open MPI
(OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE); PMI (PMI_RANK/PMI_SIZE: MPICH,
Intel MPI, srun --mpi=pmi2); Slurm (SLURM_PROCID/SLURM_NTASKS). Ranks below the number of servers serve, the
others train. The rules live in the C++ library (src/launch/placement.h), so
rdmaps-train, rdmaps-server and this package read a launch the same way.
"""

import os
from dataclasses import dataclass

from . import _as_int, _rdmaps

DEFAULT_MASTER_PORT = 29500


class LaunchError(ValueError):
    """The environment does not say where this process stands; the message names the variable."""


@dataclass(frozen=True)
class Placement:
    rank: int
    world_size: int
    num_servers: int
    source: str  # which launcher's variables gave rank and size
    servers: tuple = ()  # explicit host:port list (RDMAPS_SERVERS), else empty
    master_addr: str = ""  # rendezvous host (rank 0), when neither a list nor PMIx
    master_port: int = 0
    pmix: bool = False  # the launcher's PMIx store carries the servers' addresses
    launch_id: str = ""  # tells this launch from another at the same rendezvous (RDMAPS_JOB_ID, Slurm's job.step)

    @property
    def role(self):
        return "server" if self.rank < self.num_servers else "worker"

    @property
    def server_index(self):
        return self.rank if self.role == "server" else None

    @property
    def worker_index(self):
        return self.rank - self.num_servers if self.role == "worker" else None

    @property
    def num_workers(self):
        return self.world_size - self.num_servers


def c_environment(env):
    """`env` as the C++ side takes it: bytes, as the kernel gave them. A variable that is not UTF-8 (LANG=latin1
    paths) is a str with lone surrogates in Python, which pybind11 refused, printing every value, RDMAPS_SECRET too."""
    return {os.fsencode(name): os.fsencode(value) for name, value in env.items()}


def detect(env=None, num_servers=None):
    """The Placement the environment `env` (default os.environ) describes."""
    env = dict(os.environ if env is None else env)
    for name, value in env.items():  # pybind11's "incompatible function arguments" named neither
        if not isinstance(name, str) or not isinstance(value, str):
            # Its type, not its value: the entry may be RDMAPS_SECRET, and a traceback goes to logs.
            raise TypeError(f"rdmaps.launcher.detect: env[{name!r}] is a {type(value).__name__}: the environment "
                            "maps strings to strings, as os.environ does")
    if num_servers is not None:
        count = _as_int(num_servers)
        if count is None or not 1 <= count <= _rdmaps.max_servers:
            raise LaunchError(f"num_servers={num_servers!r} is not a whole number from 1 to "
                              f"{_rdmaps.max_servers} (None: from the environment)")
        num_servers = count
    try:
        fields = _rdmaps._detect_placement(c_environment(env), num_servers or 0)
    except _rdmaps.InvalidArgument as e:
        raise LaunchError(str(e)) from None
    if fields is None:
        raise LaunchError("no rank found: launch with torchrun, mpirun, srun or python3 -m rdmaps.launch -n N, "
                          "or set RDMAPS_RANK and RDMAPS_WORLD_SIZE")
    fields["pmix"] = fields["pmix"] and _rdmaps.have_pmix
    return Placement(**fields)
