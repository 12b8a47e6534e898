// The server's decision on a worker's Hello, taken on the control thread
// before anything is registered for the worker (the transport already checked
// the shared secret): worker count and id, staleness bound, update rule,
// declared table and its size. The first admitted Hello fixes the table
// (and, with rule_from_workers, the rule) and the staleness bound, unless the
// server was given one (Config::staleness_stated); one that check() refuses
// fixes nothing (docs/security.md: a first one refused for memory later does).
#pragma once

#include <string>
#include <vector>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/ps/protocol.h"

namespace rdmaps::ps {

/// How a server's log lines begin: "rdmaps-server", or in a job of several
/// "rdmaps-server 1/2" (their lines meet in one terminal or job log, and a
/// worker's death did not say which server saw it).
std::string server_tag(const ServerOptions& options);

/// The Welcome or LaneWelcome code refusing a worker for `e`: what it asked
/// for, or how it asked, stays refused (kRefused); a resource (files,
/// memory) may free up (kRefusedForNow).
uint32_t refusal_code(const Error& e);

/// A staleness bound as refusals name it: "3", or "inf (async)".
std::string bound_text(uint64_t staleness);

/// Largest table a server accepts: ServerOptions::max_bytes, or the machine's memory.
uint64_t table_limit_bytes(const ServerOptions& options);

/// Why this server's share of a table of `tensors` (cut in shards of
/// `shard_floats`) is over that limit ("... (--max-bytes)"), or "" when it
/// fits: for a first worker and a resumed checkpoint alike. A share, not the
/// table: a model no one machine holds is spread over several servers.
std::string table_over_limit(const std::vector<TensorDecl>& tensors, uint32_t shard_floats,
                             const ServerOptions& options);

class Admission {
 public:
  /// Draws the id this server offers a new job (Welcome::job).
  explicit Admission(const ServerOptions& options);

  /// Empty when `hello` may join, else why not (the reason goes to the worker).
  std::string check(const Hello& hello) const;
  /// The configuration the server runs with once `hello` is admitted (the
  /// first one's rule under rule_from_workers).
  Config config_for(const Hello& hello) const;
  /// Records what an admitted Hello fixes; true the first time.
  bool admit(const Hello& hello);
  /// What a checkpoint fixed, as if its first worker had been admitted
  /// (`job` 0: a checkpoint too old to name its job; the first Hello does).
  void restore(const std::vector<TensorDecl>& table, uint64_t staleness, const Config& config, uint64_t job);
  /// The job this server holds (0: none yet, or a resumed checkpoint too
  /// old to say): fixed by the first admitted Hello naming one, or, on a
  /// server of its own, by the first Hello at all.
  uint64_t job() const { return job_; }
  /// A probe's Welcome::job: the job held, else, with no table, the id this
  /// server offers a new one (server 0's is the job's); 0: not known.
  uint64_t probe_job() const { return job_ ? job_ : has_table() ? 0 : offer_; }

  bool has_table() const { return !table_.empty(); }
  const std::vector<TensorDecl>& table() const { return table_; }
  /// The server's configuration, with the rule adopted from the first worker
  /// when ServerOptions::rule_from_workers.
  const Config& config() const { return config_; }

 private:
  const ServerOptions& options_;
  Config config_;
  std::vector<TensorDecl> table_;
  uint64_t staleness_ = 0;                       // the first admitted worker's; the others must agree
  uint64_t job_ = 0;                             // see job()
  uint64_t offer_ = 0;                           // drawn at start: see probe_job()
  const char* fixed_by_ = "the first worker's";  // or the resumed checkpoint's: named in refusals
};

}  // namespace rdmaps::ps
