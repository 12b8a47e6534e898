// A server's checkpoint file: its range of the table (parameters, optimizer
// state, shard versions), the workers' clocks and how many of each worker's
// pushes it holds, the rule and the table it was written for. Written
// atomically (temporary file, fsync, rename, fsync of the directory) with a
// SHA-256 over every byte; read back only whole and intact
// (docs/cluster.md "Checkpoints", docs/protocol.md "Checkpoint file").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "src/ps/protocol.h"

namespace rdmaps::ps {

/// What a worker was to the server when the checkpoint was taken.
enum class WorkerState : uint8_t {
  kNever = 0,      ///< not connected yet: the clock waits for it
  kConnected = 1,  ///< connected, or within its reconnect window: expected back, the clock waits for it
  kGone = 2,       ///< left or lost: the clock does not wait for it
};

struct CheckpointWorker {
  WorkerState state = WorkerState::kNever;
  uint64_t clock = 0;
  uint64_t pushes = 0;  ///< of its pushes (pieces), how many the parameters account for (applied, or dropped or
                        ///< refused as non-finite: not lost)
};

/// The format version this release writes (docs/protocol.md "Checkpoint file").
constexpr uint32_t kCheckpointFormat = 3;

/// Everything but the arrays.
struct CheckpointHeader {
  uint32_t index = 0, servers = 1, shard_floats = 0;
  uint64_t staleness = 0;
  RuleParams rule;
  std::vector<TensorDecl> tensors;
  uint64_t sequence = 0;           ///< 1, 2, 3, ... per server, continued across restarts
  int64_t unix_ms = 0;             ///< when it was taken
  std::vector<uint64_t> versions;  ///< per shard of the server
  std::vector<CheckpointWorker> workers;
  /// Files of this index numbered up to it are an earlier job's (a run
  /// without --resume found them): pruning never deletes them, in this run
  /// or any resumed from it. 0: none.
  uint64_t earlier_job = 0;
  /// Per shard, the version at which its optimizer state started at 0 (the
  /// origin of DC-ASGD-a's bias correction); empty in a format-1 file: 0.
  std::vector<uint64_t> state_since;
  /// The job the parameters are of (Welcome::job): every server of a job
  /// writes the same; 0 in a file of format 2 or older.
  uint64_t job = 0;
  uint64_t updates() const;  ///< pushes held, all workers
  /// Whether a server resumed from this checkpoint holds the clock for worker
  /// `w` until it connects, at resumed_clock(w): it was connected (or was
  /// reconnecting) or not yet, or every worker had left (the job resumes as
  /// a new run that waits for all of them). One that had left a job still
  /// running is done.
  bool awaits(size_t w) const;
  /// Where worker `w` comes back: its clock here, or, where every worker had
  /// left, the furthest any got, for all alike (a worker that died early
  /// held the others back until it had stepped alone to where they were).
  uint64_t resumed_clock(size_t w) const;
  /// Every worker had left: resuming starts a new run.
  bool job_ended() const;
  /// The job resumed with `workers` workers where it had another number (a
  /// requeued job given fewer or more nodes): each is awaited at one clock,
  /// the slowest this checkpoint awaited (the furthest, where the job had
  /// ended), and the pushes of ids the job no longer has count as worker 0's,
  /// so that updates() holds. None rejoins: its Hello names the old count.
  void resize_workers(size_t workers);
};

struct Checkpoint {
  CheckpointHeader header;
  std::vector<float> params, state;  ///< the server's range; state empty when the rule keeps none
  std::string path;
};

/// One contiguous run of the server's range, in order (one per lane).
struct FloatRuns {
  std::vector<std::span<const float>> params, state;  ///< state: empty, or one per params run
};

/// Writes `dir`/server-I-SEQ.ckpt (through SEQ.ckpt.tmp) and returns its path;
/// throws Error naming the file and errno on failure (the temporary file is removed).
std::string write_checkpoint(const std::string& dir, const CheckpointHeader& header, const FloatRuns& arrays);
/// Creates `dir` (mode 700) if missing and proves a file can be written
/// there; throws Error naming the directory and errno. A server checks at
/// start, not at its first checkpoint.
void check_checkpoint_dir(const std::string& dir);
/// Deletes server `index`'s checkpoints older than the newest `keep` of
/// those in `good` (known to read back whole: written or resumed from by this
/// server), once `keep` of them are on disk, and its leftover temporary
/// files. Files it cannot vouch for (torn, not regular, an earlier job's)
/// never count toward `keep`: a torn file newer than the one resumed from
/// outranked it, and the only older intact checkpoint was deleted. Files
/// numbered up to `earlier_job` (an earlier job's, in a run without
/// --resume) are never deleted: a restart that left out --resume deleted the
/// trained model as it wrote its own.
void prune_checkpoints(const std::string& dir, uint32_t index, uint32_t keep, const std::vector<uint64_t>& good,
                       uint64_t earlier_job = 0);
/// The server indices with whole-named checkpoint files (not temporary
/// ones) in `dir`, ascending; none where it does not exist.
std::vector<uint32_t> checkpoint_indices(const std::string& dir);
/// The highest sequence among server `index`'s checkpoint files in `dir`,
/// readable or not (0: none). New ones are numbered after it, so that pruning,
/// which keeps the highest, never deletes a newer one than it wrote.
uint64_t newest_checkpoint_sequence(const std::string& dir, uint32_t index);

/// Holds `dir`/server-I.lock (flock) while it lives: a second server of the
/// same index writing to the same directory is refused, naming the first's
/// pid. The lock goes with the process, however it ends; a forked child
/// holds none of it (its copy of the descriptor is closed at the fork).
class CheckpointDirLock {
 public:
  CheckpointDirLock(const std::string& dir, uint32_t index);
  ~CheckpointDirLock();
  CheckpointDirLock(const CheckpointDirLock&) = delete;
  CheckpointDirLock& operator=(const CheckpointDirLock&) = delete;

  /// Takes the lock again, making the directory, when its file is gone or
  /// replaced (the directory deleted under the server): true when it did.
  /// Throws as the constructor does when another server took it meanwhile.
  bool retake_if_replaced();

 private:
  std::string dir_, path_;
  uint32_t index_;
  int fd_ = -1;
};
/// Parses one checkpoint file; throws Error naming the file and what is wrong.
Checkpoint read_checkpoint(const std::string& path, uint64_t max_bytes);
/// Parses a checkpoint file's bytes (`path` names it in errors): read_checkpoint() once it read them.
Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& path);
/// What a checkpoint file holds before its arrays (`floats` each of
/// parameters and, with `has_state`, optimizer state) and its SHA-256.
std::vector<uint8_t> encode_checkpoint_header(const CheckpointHeader& header, uint64_t floats, bool has_state);
/// The newest checkpoint of server `index` in `dir` that reads back intact;
/// each one skipped (torn, corrupt, unfinished) is told to `log`. nullopt:
/// the server has none there; throws Error(kInvalidArgument) if it has some
/// and none reads back.
std::optional<Checkpoint> load_newest_checkpoint(const std::string& dir, uint32_t index, uint64_t max_bytes,
                                                 const std::function<void(const std::string&)>& log);

}  // namespace rdmaps::ps
