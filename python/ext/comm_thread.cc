#include "python/ext/comm_thread.h"

#include <span>

#include "rdmaps/error.h"

namespace rdmaps::python {

CommThread::CommThread(Client& client) : client_(client), thread_([this] { loop(); }) {}

CommThread::~CommThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

CommThread::Ticket CommThread::submit(Kind kind, std::string name, void* data, size_t floats, bool awaited) {
  return enqueue({0, kind, std::move(name), data, floats, {}, std::nullopt, awaited});
}

CommThread::Ticket CommThread::submit_pulls(std::vector<PullTarget> targets, bool awaited) {
  return enqueue({0, Kind::kPullMany, {}, nullptr, 0, std::move(targets), std::nullopt, awaited});
}

CommThread::Ticket CommThread::submit_learning_rate(std::optional<float> lr, bool awaited) {
  return enqueue({0, Kind::kSetLearningRate, {}, nullptr, 0, {}, lr, awaited});
}

CommThread::Ticket CommThread::submit_snapshot() { return enqueue({0, Kind::kSnapshot, {}, nullptr, 0, {}}); }

CommThread::Snapshot CommThread::take_snapshot(Ticket ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = snapshots_.find(ticket);
  if (it == snapshots_.end()) throw Error(Errc::kNoMemory, "the worker's counters could not be read (out of memory)");
  Snapshot s = std::move(it->second);
  snapshots_.erase(it);
  if (s.error) std::rethrow_exception(s.error);
  return s;
}

CommThread::Ticket CommThread::enqueue(Op op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closing_) throw Error(Errc::kInvalidArgument, "operation submitted to a worker that is shutting down");
  op.ticket = next_++;
  queue_.push_back(std::move(op));
  work_cv_.notify_one();
  return op.ticket;
}

void CommThread::wait(Ticket ticket) {
  while (!wait_for(ticket, std::chrono::hours(1))) {
  }
}

bool CommThread::wait_for(Ticket ticket, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (ticket == 0 || ticket >= next_) throw Error(Errc::kInvalidArgument, "wait on an unknown ticket");
  if (!done_cv_.wait_for(lock, timeout, [&] { return done_ >= ticket; })) return false;
  if (failed_at_ != 0 && ticket >= failed_at_) std::rethrow_exception(error_);
  if (auto it = refused_.find(ticket); it != refused_.end()) report_refused(it);
  return true;
}

void CommThread::report_refused(std::map<Ticket, Refusal>::iterator it) {
  const std::exception_ptr e = it->second.error;
  refused_.erase(it);  // reported once
  std::rethrow_exception(e);
}

void CommThread::wait_all() {
  const Ticket last = last_submitted();
  while (!wait_all_for(last, std::chrono::hours(1))) {
  }
}

bool CommThread::wait_all_for(Ticket last, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!done_cv_.wait_for(lock, timeout, [&] { return done_ >= last; })) return false;
  // Not an error of an operation queued after this wait began (another thread's).
  if (failed_at_ != 0 && failed_at_ <= last) std::rethrow_exception(error_);
  // The earliest nobody waits for: a blocking call's refusal is its caller's.
  for (auto it = refused_.begin(); it != refused_.end() && it->first <= last; ++it)
    if (!it->second.awaited) report_refused(it);
  return true;
}

bool CommThread::finished_for(Ticket last, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return done_cv_.wait_for(lock, timeout, [&] { return done_ >= last; });
}

CommThread::Ticket CommThread::last_submitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_ - 1;
}

CommThread::Ticket CommThread::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

size_t CommThread::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(next_ - 1 - done_);
}

void CommThread::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
    if (queue_.empty()) return;  // closing, drained
    Op op = std::move(queue_.front());
    queue_.pop_front();
    const bool failed = failed_at_ != 0;
    lock.unlock();
    std::exception_ptr error;
    bool alone = false;  // a bad argument, refused before anything was sent
    if (op.kind == Kind::kSnapshot) {
      Snapshot s;
      try {
        s.stats = client_.stats();
        s.messages_rejected = client_.messages_rejected();
        s.clock = client_.clock_value();
      } catch (...) {  // out of memory for its strings: that read fails, not the thread
        s.error = std::current_exception();
      }
      lock.lock();
      try {
        snapshots_.emplace(op.ticket, std::move(s));
      } catch (...) {  // no memory for the entry: take_snapshot says so
      }
      done_ = op.ticket;
      done_cv_.notify_all();
      continue;
    }
    if (!failed) {
      try {
        execute(op);
      } catch (const Error& e) {
        error = std::current_exception();
        alone = e.code() == Errc::kInvalidArgument;
      } catch (...) {
        error = std::current_exception();
      }
    }
    lock.lock();
    if (error && alone) {
      refused_[op.ticket] = {error, op.awaited};
    } else if (error && failed_at_ == 0) {
      failed_at_ = op.ticket;
      error_ = error;
    }
    done_ = op.ticket;
    done_cv_.notify_all();
  }
}

void CommThread::execute(const Op& op) {
  auto* f = static_cast<float*>(op.data);
  switch (op.kind) {
    case Kind::kPush:
      client_.push(op.name, std::span<const float>(f, op.floats));
      return;
    case Kind::kPull:
      client_.pull(op.name, std::span<float>(f, op.floats));
      return;
    case Kind::kInit:
      client_.init(op.name, std::span<const float>(f, op.floats));
      return;
    case Kind::kClock:
      client_.clock();
      return;
    case Kind::kBarrier:
      client_.barrier();
      return;
    case Kind::kPullMany:
      client_.pull(std::span<const PullTarget>(op.pulls));
      return;
    case Kind::kSetLearningRate:
      client_.set_learning_rate(op.learning_rate);
      return;
    case Kind::kRegisterMemory:
      client_.register_memory(std::span<float>(f, op.floats));
      return;
    case Kind::kSnapshot:  // loop() takes it
      return;
  }
}

}  // namespace rdmaps::python
