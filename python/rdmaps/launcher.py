"""Where this process stands in a job: rank, world size and role, read from the
variables launchers already set.

Order (first complete pair wins): RDMAPS_RANK/RDMAPS_WORLD_SIZE; torchrun
(RANK/WORLD_SIZE); Open MPI (OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE); PMI
(PMI_RANK/PMI_SIZE: MPICH, Intel MPI, srun --mpi=pmi2); Slurm
(SLURM_PROCID/SLURM_NTASKS). Ranks below the number of servers serve, the
others train.
"""

import os
from dataclasses import dataclass

_RANK_SOURCES = (
    ("rdmaps", "RDMAPS_RANK", "RDMAPS_WORLD_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("pmi", "PMI_RANK", "PMI_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS"),
)

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
    master_addr: str = ""  # rendezvous host (rank 0), when no explicit list
    master_port: int = 0

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


def _integer(env, name, minimum):
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        raise LaunchError(f"{name}={text!r} is not an integer") from None
    if value < minimum:
        raise LaunchError(f"{name}={value} is below {minimum}")
    return value


def detect(env=None, num_servers=None):
    """The Placement the environment `env` (default os.environ) describes."""
    env = os.environ if env is None else env
    for source, rank_var, size_var in _RANK_SOURCES:
        if rank_var in env or size_var in env:
            if rank_var not in env or size_var not in env:
                missing = size_var if rank_var in env else rank_var
                raise LaunchError(f"{rank_var if missing == size_var else size_var} is set but {missing} is not")
            rank = _integer(env, rank_var, 0)
            world = _integer(env, size_var, 1)
            if rank >= world:
                raise LaunchError(f"{rank_var}={rank} is not below {size_var}={world}")
            break
    else:
        raise LaunchError("no rank found: launch with torchrun, mpirun or srun, or set RDMAPS_RANK and "
                          "RDMAPS_WORLD_SIZE")

    servers = tuple(s for s in env.get("RDMAPS_SERVERS", "").split(",") if s)
    for s in servers:
        host, _, port = s.rpartition(":")
        if not host or not port.isdigit():
            raise LaunchError(f"RDMAPS_SERVERS entry {s!r} is not host:port")
    if num_servers is None:
        if "RDMAPS_NUM_SERVERS" in env:
            num_servers = _integer(env, "RDMAPS_NUM_SERVERS", 1)
        else:
            num_servers = len(servers) or 1
    if num_servers < 1:
        raise LaunchError(f"num_servers={num_servers}: at least one server is needed")
    if servers and len(servers) != num_servers:
        raise LaunchError(f"RDMAPS_SERVERS lists {len(servers)} servers but the job has {num_servers}")
    if world <= num_servers:
        raise LaunchError(f"world size {world} leaves no worker beside {num_servers} server(s): start more "
                          "processes or fewer servers (RDMAPS_NUM_SERVERS)")

    master_addr, master_port = "", 0
    if not servers:
        for var in ("RDMAPS_MASTER_ADDR", "MASTER_ADDR", "SLURM_LAUNCH_NODE_IPADDR"):
            if env.get(var):
                master_addr = env[var]
                break
        else:
            raise LaunchError("no rendezvous address: set MASTER_ADDR (rank 0's host) and MASTER_PORT, or list the "
                              "servers in RDMAPS_SERVERS")
        master_port = DEFAULT_MASTER_PORT
        for var in ("RDMAPS_MASTER_PORT", "MASTER_PORT"):
            if env.get(var):
                master_port = _integer(env, var, 1)
                if master_port > 65535:
                    raise LaunchError(f"{var}={master_port} is not a TCP port")
                break
    return Placement(rank, world, num_servers, source, servers, master_addr, master_port)
