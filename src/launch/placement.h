// Where this process stands in a job that a launcher started (mpirun, srun,
// torchrun, python3 -m rdmaps.launch): rank and world size from the
// launcher's own variables, and the role that follows: ranks below the number
// of servers serve, the others train (docs/cluster.md "Launchers").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace rdmaps::launch {

/// One environment variable, or nullopt when it is unset. Tests pass a map.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;
Environment process_environment();

struct Placement {
  uint32_t rank = 0, world_size = 1, num_servers = 1;
  std::string source;                ///< whose variables: rdmaps, torchrun, openmpi, pmi or slurm
  std::string rank_var;              ///< the variable the rank came from, for messages
  std::vector<std::string> servers;  ///< RDMAPS_SERVERS (host:port each): no exchange needed
  /// The launcher runs a PMIx server for this process (PMIX_NAMESPACE and
  /// PMIX_RANK are set) and the rank is of its job: addresses go through its
  /// key-value store. False for a launcher started inside it (RANK with
  /// another world size): its ranks share one PMIx identity.
  bool pmix = false;
  /// Rendezvous host (rank 0's), when neither a list nor PMIx: RDMAPS_MASTER_ADDR,
  /// MASTER_ADDR, the first host of SLURM_STEP_NODELIST, SLURM_LAUNCH_NODE_IPADDR
  /// (Slurm's only where its step is this launch and not heterogeneous).
  std::string master_addr;
  std::string master_addr_var = "MASTER_ADDR";  ///< the variable it came from, for messages
  uint16_t master_port = 0;
  /// Where it came from, for messages: RDMAPS_MASTER_PORT, MASTER_PORT, or
  /// words for Slurm's step hash or the default (users fix the variable named).
  std::string master_port_var = "MASTER_PORT";
  /// Tells this launch from another that shares its hosts and MASTER_PORT
  /// (and its secret): RDMAPS_JOB_ID, else Slurm's SLURM_JOB_ID.SLURM_STEP_ID
  /// where srun started this launch (not mpirun inside an allocation),
  /// else torchrun's TORCHELASTIC_RUN_ID; "" when no launcher says. The
  /// rendezvous refuses a rank of another launch.
  std::string launch_id;

  bool is_server() const { return rank < num_servers; }
  uint32_t server_index() const { return rank; }
  uint32_t worker_index() const { return rank - num_servers; }
  uint32_t num_workers() const { return world_size - num_servers; }
  /// "rank 2 of 4 (OMPI_COMM_WORLD_RANK): worker 1 of 3"
  std::string describe() const;
  /// master_addr given as a loopback address or "localhost" puts every rank
  /// on this host. A name, even one this host maps to 127.0.1.1 (Debian's
  /// installer writes that for the host's own name), is reached from other
  /// hosts at a real address.
  bool every_rank_is_local() const;
  /// A worker count given beside the launch (by `source`: --workers, or
  /// RDMAPS_WORKERS exported to every rank) must be its worker count; throws
  /// Error(kInvalidArgument) saying both.
  void check_workers(uint32_t given, const std::string& source = "--workers") const;
};

/// MASTER_PORT when none is given; a Slurm step without one takes a port of
/// its own from its job and step ids, 29500 to 30499, so that two steps on a
/// node do not meet at one rendezvous.
constexpr uint16_t kDefaultMasterPort = 29500;

/// The longest a launched job's ranks wait in all for ranks that start late
/// (a Python worker that imports torch and loads its data first): past
/// --launch-timeout, the rendezvous waits on this long where only workers are
/// missing, and the PMIx fence, which cannot tell who is missing, this long,
/// saying so at the timeout.
inline constexpr std::chrono::seconds kLateWorkers{600};

/// The placement the environment describes, or nullopt when no launcher
/// variable is set. num_servers 0: RDMAPS_NUM_SERVERS, else the length of
/// RDMAPS_SERVERS, else 1. Order, first pair wins: RDMAPS_RANK/
/// RDMAPS_WORLD_SIZE, torchrun's RANK/WORLD_SIZE, Open MPI's
/// OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/PMI_SIZE, Slurm's SLURM_PROCID/
/// SLURM_NTASKS in a task srun started (SLURM_STEP_ID set; the step's own
/// SLURM_STEP_NUM_TASKS where set). PMIx (PMIX_RANK,
/// PMIX_NAMESPACE) carries the addresses unless RANK/WORLD_SIZE or
/// RDMAPS_RANK/RDMAPS_WORLD_SIZE give another world size than the launcher
/// that runs PMIx (a launcher started inside it). Throws
/// Error(kInvalidArgument) naming the variable at fault: a half pair, a rank
/// not below the size, no rank left for a worker, a PMIX_RANK that disagrees
/// with the rank of the same job, an RDMAPS_SERVERS entry that is not a
/// server's host:port (empty, port 0, a duplicate, ...), no rendezvous address,
/// a `num_servers` above kMaxServers.
std::optional<Placement> detect(const Environment& env, uint32_t num_servers = 0);

/// Whether a launcher started this process as one of several: the first
/// launcher's world size (in detect's order) is above 1. A tool started
/// alone (srun -n 1, a batch script) keeps its single-process behaviour.
/// Throws Error(kInvalidArgument) naming the variable when that launcher's
/// pair is invalid (not a number, a rank not below the size).
bool started_with_others(const Environment& env);

/// A launched job's servers listen on every address, so its ranks need a
/// shared secret: throws Error(kInvalidArgument) saying how to pass one to
/// every rank when `has_secret` is false. rdmaps-train and rdmaps-server ask
/// alike, before anything listens.
void require_secret(bool has_secret);

/// --launch-timeout given to a process no launch started (or started as a
/// rank by hand, `by_hand` naming how): throws Error(kInvalidArgument), as
/// rdmaps-train and rdmaps-server refuse other settings that would do nothing.
[[noreturn]] void refuse_launch_timeout(const std::string& by_hand);

/// HOST:PORT+offset: each rank of a launch serves its metrics on the port
/// given plus its rank, so ranks sharing a host do not collide and a scrape
/// config can list PORT..PORT+world-1. Throws Error(kInvalidArgument) naming
/// `flag` when the text is not HOST:PORT or the port would pass 65535.
std::string port_plus(const std::string& host_port, uint32_t offset, const std::string& flag);

}  // namespace rdmaps::launch
