// Runs one Client's operations in submission order on a thread of their own,
// so that a trainer can hand a gradient over from an autograd hook and go on
// with the backward pass while it is sent (the Client itself is not
// thread-safe; only this thread touches it once started).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/client.h"

namespace rdmaps::python {

class CommThread {
 public:
  enum class Kind { kPush, kPull, kInit, kClock, kBarrier, kPullMany, kSetLearningRate, kRegisterMemory, kSnapshot };
  using Ticket = uint64_t;

  explicit CommThread(Client& client);
  /// Finishes the queued operations, then joins.
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  /// Queues an operation on `floats` floats at `data` (none for clock and
  /// barrier); the memory must stay valid until wait(ticket) returned.
  /// `awaited`: its caller waits for it at once (a blocking call), so a
  /// refusal of it is that caller's alone, never another thread's wait_all().
  Ticket submit(Kind kind, std::string name = {}, void* data = nullptr, size_t floats = 0, bool awaited = false);
  /// Queues one batched pull (Client::pull of several tensors).
  Ticket submit_pulls(std::vector<PullTarget> targets, bool awaited = false);
  /// What stats() and clock_value() read; taken on this thread, since the
  /// Client refuses a call from another one while an operation runs.
  struct Snapshot {
    ClientStats stats;
    uint64_t messages_rejected = 0;  // Client::messages_rejected()
    uint64_t clock = 0;
    std::exception_ptr error;  // the read failed (out of memory): its taker's, not wait_all()'s
  };
  /// Queues a Snapshot of the client after the operations queued before it;
  /// it is taken even after an error (what a dead server lost is read then).
  Ticket submit_snapshot();
  /// The snapshot of a finished submit_snapshot() ticket, handed out once.
  Snapshot take_snapshot(Ticket ticket);
  /// Queues Client::set_learning_rate: pushes queued after it carry `lr` (none: the servers').
  Ticket submit_learning_rate(std::optional<float> lr, bool awaited = false);
  /// Blocks until the operation finished; rethrows its error. A bad argument
  /// (an undeclared name, a wrong size: kInvalidArgument, checked before
  /// anything is sent) fails that operation alone; after any other error every
  /// later operation fails with it too (the connection state is unknown).
  void wait(Ticket ticket);
  /// Waits for everything submitted so far; rethrows the first error not yet
  /// reported by wait().
  void wait_all();
  /// As wait(ticket), but false if the operation is still running after
  /// `timeout` (it goes on; wait again).
  bool wait_for(Ticket ticket, std::chrono::milliseconds timeout);
  /// As wait_all() for the operations up to `last` (last_submitted() when the
  /// wait began), but false if some still run after `timeout`.
  bool wait_all_for(Ticket last, std::chrono::milliseconds timeout);
  /// As wait_all_for(), but never throws: errors stay for the waits that report them.
  bool finished_for(Ticket last, std::chrono::milliseconds timeout);
  /// The newest ticket handed out (0: none yet).
  Ticket last_submitted() const;
  /// Every operation up to this ticket has finished.
  Ticket finished() const;
  /// Operations submitted and not finished yet.
  size_t pending() const;

 private:
  struct Op {
    Ticket ticket;
    Kind kind;
    std::string name;
    void* data;
    size_t floats;
    std::vector<PullTarget> pulls;                      // kPullMany
    std::optional<float> learning_rate = std::nullopt;  // kSetLearningRate
    bool awaited = false;                               // submit()'s
  };
  struct Refusal {
    std::exception_ptr error;
    bool awaited;  // reported to its own wait only
  };
  Ticket enqueue(Op op);
  /// Under mu_: forgets the refusal at `it` and throws it.
  [[noreturn]] void report_refused(std::map<Ticket, Refusal>::iterator it);
  void loop();
  void execute(const Op& op);

  Client& client_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Op> queue_;
  Ticket next_ = 1, done_ = 0;
  Ticket failed_at_ = 0;  // first ticket that failed for good; 0 = none
  std::exception_ptr error_;
  std::map<Ticket, Refusal> refused_;     // operations that failed alone, until reported
  std::map<Ticket, Snapshot> snapshots_;  // taken, until handed out
  bool closing_ = false;
  std::thread thread_;
};

}  // namespace rdmaps::python
