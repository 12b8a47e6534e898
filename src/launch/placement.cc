#include "src/launch/placement.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "rdmaps_config.h"
#include "src/launch/server_list.h"

namespace rdmaps::launch {
namespace {

struct RankSource {
  const char* name;
  const char* rank_var;
  const char* size_var;
  const char* step_var;                 ///< set only where the launcher started this process itself, or null
  const char* step_size_var = nullptr;  ///< the size of this step alone, preferred where set
};

// Innermost launcher first: torchrun under srun describes the process by its
// own variables, and RDMAPS_* overrides them all.
constexpr RankSource kSources[] = {
    {"rdmaps", "RDMAPS_RANK", "RDMAPS_WORLD_SIZE", nullptr},
    {"torchrun", "RANK", "WORLD_SIZE", nullptr},
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", nullptr},
    {"pmi", "PMI_RANK", "PMI_SIZE", nullptr},  // MPICH, Intel MPI, srun --mpi=pmi2
    // A batch script has SLURM_PROCID=0 and the job's SLURM_NTASKS too; only
    // a task that srun started has a step. SLURM_NTASKS is the job's under
    // srun --export/-E (Slurm rewrites it only for a fresh environment); the
    // step's own count is SLURM_STEP_NUM_TASKS.
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS"},
};

// The variable that gives s's world size here (its step's where set), and its value.
std::pair<const char*, std::optional<std::string>> size_of(const Environment& env, const RankSource& s) {
  if (s.step_size_var)
    if (auto v = env(s.step_size_var)) return {s.step_size_var, v};
  return {s.size_var, env(s.size_var)};
}

[[noreturn]] void fail(const std::string& why) { throw Error(Errc::kInvalidArgument, why); }

// Digits only: strtoull alone takes " -1" for 2^64 - 1 and "1x" for 1.
uint64_t integer(const std::string& name, const std::string& text, uint64_t minimum, uint64_t maximum) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
    const size_t first = text.find_first_not_of(" \t");
    if (first != std::string::npos && text[first] == '-' && text.find_first_of("0123456789") != std::string::npos)
      fail(name + "='" + text + "' is negative");
    fail(name + "='" + text + "' is not an integer");
  }
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  if (errno == ERANGE || v > maximum) fail(name + "=" + text + " is above " + std::to_string(maximum));
  if (v < minimum) fail(name + "=" + text + " is below " + std::to_string(minimum));
  return v;
}

// The first host of a Slurm host list: "node[3-4,7],gpu1" -> "node3",
// "rack[1-2]-n[01-04]" -> "rack1-n01" (zero padding kept).
std::string first_host(const std::string& list) {
  std::string host;
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i] == ',') break;
    if (list[i] != '[') {
      host += list[i];
      continue;
    }
    const size_t close = list.find(']', i);
    if (close == std::string::npos) return list;  // not a host list: let the connect name it
    const size_t end = list.find_first_of(",-", i + 1);
    host += list.substr(i + 1, std::min(end, close) - i - 1);
    i = close;
  }
  return host;
}

bool pmix_family(const std::string& source) { return source == "openmpi" || source == "pmi" || source == "slurm"; }

// Whether Slurm's step variables describe this launch: srun started its ranks
// (theirs is the rank, or a launcher inside the step gave it), or an MPI rank's
// world is the step's. mpirun inside an allocation is not: the ranks on its
// node inherit the shell's step (salloc's, one task), those on other nodes the
// steps it starts its daemons in, so their step ids and node lists differ.
bool slurm_step_is_launch(const Environment& env, const Placement& p) {
  if (!env("SLURM_STEP_ID")) return false;
  if (p.source != "openmpi" && p.source != "pmi") return true;
  // Not SLURM_NTASKS: the allocation's count, mpirun's default -np.
  auto tasks = env("SLURM_STEP_NUM_TASKS");
  return tasks && *tasks == std::to_string(p.world_size);
}

std::string launch_id_of(const Environment& env, bool slurm_step) {
  if (auto id = env("RDMAPS_JOB_ID")) {
    const size_t first = id->find_first_not_of(" \t\r\n"), last = id->find_last_not_of(" \t\r\n");
    if (first != std::string::npos) {
      std::string trimmed = id->substr(first, last - first + 1);  // the rendezvous trims it too
      // One with a line break inside was cut at it on the wire: rank 0 refused its own request as another launch's.
      if (std::any_of(trimmed.begin(), trimmed.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; }))
        fail("RDMAPS_JOB_ID holds a control character (a line break?): give the launch one line of text");
      return trimmed;
    }
  }
  if (auto job = env("SLURM_JOB_ID"); job && slurm_step) return "slurm:" + *job + "." + *env("SLURM_STEP_ID");
  // torchrun says "none" unless given --rdzv-id (or --standalone, a fresh id).
  if (auto run = env("TORCHELASTIC_RUN_ID"); run && !run->empty() && *run != "none") return "torchrun:" + *run;
  return "";
}

// A port of the step's own (FNV-1a of its ids): steps sharing a node that
// rely on the default would otherwise share one rendezvous.
uint16_t slurm_step_port(const std::string& launch_id) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : launch_id) h = (h ^ c) * 1099511628211ull;
  return static_cast<uint16_t>(kDefaultMasterPort + h % 1000);
}

// The launcher that started this process as one of its ranks (mpirun, a PMI
// launcher, srun): the first whose world size is set here.
struct OuterLauncher {
  const RankSource* source;
  const char* size_var;
  std::string size_text;
  uint64_t size;
};
std::optional<OuterLauncher> outer_launcher(const Environment& env) {
  for (const RankSource& s : kSources) {
    if (!pmix_family(s.name) || (s.step_var && !env(s.step_var))) continue;
    if (const auto [var, size] = size_of(env, s); size)
      return OuterLauncher{&s, var, *size, integer(var, *size, 1, UINT32_MAX)};
  }
  return std::nullopt;
}

// A size-1 pair of the innermost kind (RANK=0 WORLD_SIZE=1, left in the shell
// by a single-GPU torch script) under a launcher that started several: every
// rank ran a job of its own, all writing the same files. torchrun's own pair
// (TORCHELASTIC_RUN_ID) is its launch: one per outer rank.
void refuse_alone_among_others(const Environment& env, const RankSource& s, const char* size_var) {
  if (std::string_view(s.name) != "rdmaps" && std::string_view(s.name) != "torchrun") return;
  if (std::string_view(s.name) == "torchrun" && env("TORCHELASTIC_RUN_ID")) return;
  if (const auto outer = outer_launcher(env); outer && outer->size > 1)
    fail(std::string(s.rank_var) + " and " + size_var + "=1 say this process runs alone, but " + outer->size_var + "=" +
         outer->size_text + " says its launcher started " + outer->size_text +
         " (each would run a job of its own, writing the same files): left in the shell from another run, or "
         "exported by hand? unset " +
         s.rank_var + " and " + size_var);
}

}  // namespace

Environment process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

bool started_with_others(const Environment& env) {
  for (const RankSource& s : kSources) {
    if (s.step_var && !env(s.step_var)) continue;
    auto rank = env(s.rank_var);
    const auto [size_var, size] = size_of(env, s);
    if (!rank || !size) {
      if (rank || size) return true;  // a half pair: detect() names what is missing
      continue;
    }
    // A launch of one process runs alone, but only with a valid pair: a rank
    // the size cannot hold, or a size that is not a number, is an error, not
    // a reason to ignore the launcher.
    const uint64_t n = integer(size_var, *size, 1, UINT32_MAX);
    if (integer(s.rank_var, *rank, 0, UINT32_MAX) >= n)
      fail(std::string(s.rank_var) + "=" + *rank + " is not below " + size_var + "=" + *size);
    if (n == 1) refuse_alone_among_others(env, s, size_var);
    return n != 1;
  }
  return false;
}

void require_secret(bool has_secret) {
  if (!has_secret)
    throw Error(Errc::kInvalidArgument,
                "a launched job serves on every address, so its ranks need a shared secret: export RDMAPS_SECRET=$("
                "openssl rand -hex 32) and pass it to every rank (mpirun -x RDMAPS_SECRET; srun passes the "
                "environment on), or give --secret-file FILE on a shared file system (docs/security.md)");
}

void refuse_launch_timeout(const std::string& by_hand) {
  throw Error(Errc::kInvalidArgument,
              "--launch-timeout: bounds the address exchange of a launched job (mpirun, srun, torchrun); this "
              "process was not started by one" +
                  (by_hand.empty() ? std::string() : " as a rank (" + by_hand + " is given)"));
}

std::string port_plus(const std::string& host_port, uint32_t offset, const std::string& flag) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon + 1 == host_port.size())
    fail(flag + ": '" + host_port + "' is not HOST:PORT");
  const uint64_t port = integer(flag, host_port.substr(colon + 1), 0, 65535);
  if (port == 0)
    fail(flag +
         ": port 0 picks a free port for one process, but each process of this run serves on PORT plus "
         "its offset: give PORT (at least 1)");
  if (port + offset > 65535)
    fail(flag + ": port " + std::to_string(port) + " plus " + std::to_string(offset) + " passes 65535");
  return host_port.substr(0, colon + 1) + std::to_string(port + offset);
}

void Placement::check_workers(uint32_t given, const std::string& source) const {
  if (given != num_workers())
    fail(source + ": " + std::to_string(given) + " differs from the " + std::to_string(num_workers()) +
         " worker ranks of this launch (world size " + std::to_string(world_size) + " minus " +
         std::to_string(num_servers) + " server(s)); " + (source.starts_with("--") ? "leave it out" : "unset it"));
}

bool Placement::every_rank_is_local() const {
  std::string host = master_addr;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return host == "localhost";
}

std::string Placement::describe() const {
  std::string role = is_server() ? "server " + std::to_string(server_index()) + " of " + std::to_string(num_servers)
                                 : "worker " + std::to_string(worker_index()) + " of " + std::to_string(num_workers());
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (" + rank_var + "): " + role;
}

std::optional<Placement> detect(const Environment& env, uint32_t num_servers) {
  Placement p;
  bool found = false;
  std::string world_size_var;  // for a count out of range: the variable it came from
  for (const RankSource& s : kSources) {
    if (s.step_var && !env(s.step_var)) continue;
    auto rank = env(s.rank_var);
    const auto [size_var, size] = size_of(env, s);
    if (!rank && !size) continue;
    if (!rank || !size)
      fail(std::string(rank ? s.rank_var : size_var) + " is set but " + (rank ? size_var : s.rank_var) + " is not");
    p.world_size = static_cast<uint32_t>(integer(size_var, *size, 1, UINT32_MAX));
    p.rank = static_cast<uint32_t>(integer(s.rank_var, *rank, 0, UINT32_MAX));
    if (p.rank >= p.world_size) fail(std::string(s.rank_var) + "=" + *rank + " is not below " + size_var + "=" + *size);
    if (p.world_size == 1) refuse_alone_among_others(env, s, size_var);
    world_size_var = size_var;
    p.source = s.name;
    p.rank_var = s.rank_var;
    found = true;
    break;
  }
  if (!found) return std::nullopt;

  // PMIx's rank is the rank of this process in the job of the launcher that
  // runs the PMIx server (mpirun, srun --mpi=pmix); its job size is that
  // launcher's size variable. RANK or RDMAPS_RANK with the same world size
  // describe that job too, so they must agree with PMIx (a RANK exported by
  // hand under mpirun does not). With another world size they are a launcher
  // started inside it (rdmaps.launch or torchrun under mpirun -np 1): the
  // innermost launcher describes the process, its ranks share the outer
  // process's PMIx identity, and so the addresses go through the rendezvous.
  std::string nested_note;  // why PMIx is not used, for the error that follows from it
  if (auto pmix_rank = env("PMIX_RANK"); pmix_rank && env("PMIX_NAMESPACE")) {
    const uint64_t r = integer("PMIX_RANK", *pmix_rank, 0, UINT32_MAX);
    const auto outer = outer_launcher(env);
    const bool same_family = pmix_family(p.source);
    // torchrun numbers its ranks in its own rendezvous, whatever the sizes.
    const bool torchrun = p.source == "torchrun" && env("TORCHELASTIC_RUN_ID");
    const bool nested = !same_family && (torchrun || (outer && outer->size != p.world_size));
    p.pmix = !nested;
    if (nested && torchrun)
      nested_note =
          "; RANK comes from torchrun (TORCHELASTIC_RUN_ID is set), started inside PMIx's launcher, so "
          "its ranks meet at MASTER_ADDR";
    else if (nested)
      nested_note = "; " + p.rank_var + " gives world size " + std::to_string(p.world_size) + ", PMIx's launcher " +
                    std::to_string(outer->size) + " (" + outer->size_var +
                    "), so this is taken for a launcher started inside it, whose ranks meet at MASTER_ADDR; "
                    "exported by hand or left from another launch? unset " +
                    p.rank_var + " and its world size";
    else if (!RDMAPS_HAVE_PMIX)
      nested_note =
          "; PMIx's launcher started this process, but this build of rdmaps has no PMIx (install "
          "libpmix-dev and build again with meson setup -Dpmix=enabled)";
    if (!nested && r != p.rank)
      fail("two launchers disagree about this process: PMIx says rank " + *pmix_rank +
           (outer ? " of " + std::to_string(outer->size) + " (PMIX_RANK, " + outer->size_var + ")" : " (PMIX_RANK)") +
           ", " + p.rank_var + " says rank " + std::to_string(p.rank) + " of " + std::to_string(p.world_size) +
           " (exported by hand, or inherited from an outer launch? unset " + p.rank_var +
           (same_family ? ""
                        : "; a launcher started inside mpirun or srun describes its processes with a world "
                          "size of its own") +
           ")");
  } else if (!pmix_family(p.source) && !(p.source == "torchrun" && env("TORCHELASTIC_RUN_ID"))) {
    // The same check without PMIx (srun --mpi=none or pmi2, MPICH): a RANK
    // left in the shell with the launcher's own world size made every task
    // that rank, told a wrong rendezvous host on the others.
    const auto outer = outer_launcher(env);
    const auto outer_rank = outer ? env(outer->source->rank_var) : std::nullopt;
    if (outer_rank && outer->size == p.world_size &&
        integer(outer->source->rank_var, *outer_rank, 0, UINT32_MAX) != p.rank)
      fail("two launchers disagree about this process: " + std::string(outer->source->rank_var) + " says rank " +
           *outer_rank + " of " + outer->size_text + ", " + p.rank_var + " says rank " + std::to_string(p.rank) +
           " of " + std::to_string(p.world_size) + " (exported by hand, or inherited from an outer launch? unset " +
           p.rank_var + ")");
  }

  const bool slurm_step = slurm_step_is_launch(env, p);
  p.launch_id = launch_id_of(env, slurm_step);
  if (auto list = env("RDMAPS_SERVERS"); list && !list->empty()) p.servers = server_list(*list, "RDMAPS_SERVERS");
  if (num_servers > kMaxServers)
    fail("the job's " + std::to_string(num_servers) + " servers are above " + std::to_string(kMaxServers) +
         ", the most a job has");
  if (num_servers == 0) {
    if (auto n = env("RDMAPS_NUM_SERVERS"))
      num_servers = static_cast<uint32_t>(integer("RDMAPS_NUM_SERVERS", *n, 1, kMaxServers));
    else
      num_servers = p.servers.empty() ? 1 : static_cast<uint32_t>(p.servers.size());
  }
  p.num_servers = num_servers;
  if (!p.servers.empty() && p.servers.size() != num_servers)
    fail("RDMAPS_SERVERS lists " + std::to_string(p.servers.size()) + " servers but the job has " +
         std::to_string(num_servers));
  if (p.world_size <= num_servers)
    fail("world size " + std::to_string(p.world_size) + " (" + p.source + ") leaves no worker beside " +
         std::to_string(num_servers) + " server(s): start more processes or fewer servers");
  // Named here, by the variable: the server refused the count later as its option (--workers), which
  // nobody gave, and only rank 0 said so (the others waited out the launch timeout).
  if (p.world_size - num_servers > kMaxWorkers)
    fail(world_size_var + "=" + std::to_string(p.world_size) + " leaves " + std::to_string(p.world_size - num_servers) +
         " workers beside " + std::to_string(num_servers) + " server(s); a job has at most " +
         std::to_string(kMaxWorkers));

  if (p.servers.empty() && !(p.pmix && RDMAPS_HAVE_PMIX)) {
    // Under srun, task 0 runs on the step's first node (block and cyclic
    // layouts); the launch node (SLURM_LAUNCH_NODE_IPADDR) may be a login
    // node outside the allocation, so it comes last.
    if (!slurm_step && env("SLURM_STEP_ID"))
      nested_note += "; Slurm's SLURM_STEP_NODELIST is not used: this world of " + std::to_string(p.world_size) +
                     " ranks (" + p.rank_var +
                     ") is not the Slurm step's (mpirun inside an allocation starts its ranks in steps of its own)";
    for (const char* var : {"RDMAPS_MASTER_ADDR", "MASTER_ADDR", "SLURM_STEP_NODELIST", "SLURM_LAUNCH_NODE_IPADDR"}) {
      if (!slurm_step && std::string_view(var).starts_with("SLURM_")) continue;
      if (auto v = env(var); v && !v->empty()) {
        p.master_addr = std::string(var) == "SLURM_STEP_NODELIST" ? first_host(*v) : *v;
        p.master_addr_var = var;
        break;
      }
    }
    if (p.master_addr.empty())
      fail(
          "no rendezvous address: set MASTER_ADDR (rank 0's host) and MASTER_PORT, list the servers in "
          "RDMAPS_SERVERS, or start under a launcher with PMIx (mpirun, srun --mpi=pmix)" +
          nested_note);
    // "127.0.0.1:29500" became "[127.0.0.1:29500]:29500", "does not resolve". A bare IPv6 address holds several
    // colons; a bracketed one may not carry a port either.
    if (const std::string& a = p.master_addr;
        std::count(a.begin(), a.end(), ':') == 1 || (a.starts_with('[') && a.find("]:") != std::string::npos))
      fail(p.master_addr_var + "='" + a + "' holds a port: give rank 0's host alone; the port is MASTER_PORT");
    // Whatever gave the rank (srun --mpi=pmi2 gives PMI_RANK too).
    // Under srun whatever names the launch (RDMAPS_JOB_ID too: two steps told
    // apart by it shared the default port, and the second's rank 0 could not host).
    const bool slurm_port = slurm_step && env("SLURM_JOB_ID");
    p.master_port = slurm_port ? slurm_step_port(p.launch_id) : kDefaultMasterPort;
    p.master_port_var =
        slurm_port ? "the port of the Slurm job and step (MASTER_PORT unset)" : "the default port (MASTER_PORT unset)";
    for (const char* var : {"RDMAPS_MASTER_PORT", "MASTER_PORT"}) {
      if (auto v = env(var); v && !v->empty()) {
        p.master_port = static_cast<uint16_t>(integer(var, *v, 1, 65535));
        p.master_port_var = var;
        break;
      }
    }
  }
  return p;
}

}  // namespace rdmaps::launch
