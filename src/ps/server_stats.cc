// What the server says about itself (server_impl.h): ServerStats summed
// from the lanes' counters, and the periodic report of the control thread.
#include <algorithm>

#include "rdmaps/log.h"
#include "src/ps/quantile.h"
#include "src/ps/server_impl.h"
#include "src/ps/server_report.h"

namespace rdmaps {

namespace {
// The bucket of `h` the q-quantile falls in; the last one counts every tau
// from its index on (0 when `h` counts nothing).
size_t quantile_bucket(const std::vector<uint64_t>& h, double q) {
  return h.empty() ? 0 : std::min(ps::quantile_index(h, q), h.size() - 1);
}
}  // namespace

double ServerStats::staleness_quantile(double q) const { return static_cast<double>(quantile_bucket(staleness, q)); }

std::string ServerStats::staleness_quantile_text(double q) const {
  const size_t bucket = quantile_bucket(staleness, q);
  // The last bucket holds every tau from its index on: only a lower bound is known.
  const bool overflow = !staleness.empty() && bucket == staleness.size() - 1 && staleness.back() > 0;
  return (overflow ? ">=" : "") + std::to_string(bucket);
}

namespace ps {

using namespace std::chrono_literals;

uint64_t ServerImpl::updates_taken() const {
  uint64_t n = 0;
  for (const auto& lane : lanes_)
    n += lane->counters().pushes.load(std::memory_order_relaxed) +
         lane->counters().dropped.load(std::memory_order_relaxed);
  return n;
}

bool ServerImpl::applied_any() const {
  std::lock_guard<std::mutex> lock(lanes_mu_);
  for (const auto& lane : lanes_)
    if (lane->counters().pushes.load(std::memory_order_relaxed)) return true;
  return false;
}

ServerStats ServerImpl::stats() const {
  ServerStats s;
  s.applied_per_worker.assign(options_.workers, 0);
  s.rejected_per_worker.assign(options_.workers, 0);
  s.bytes_in_per_worker.assign(options_.workers, 0);
  std::lock_guard<std::mutex> lock(lanes_mu_);
  s.lanes = static_cast<uint32_t>(lanes_.size());
  s.staleness.assign(kStalenessBuckets, 0);
  s.min_clock = lanes_.empty() ? 0 : UINT64_MAX;
  s.rule = rule_;
  s.apply_latency.counts.assign(kDurationBuckets, 0);
  s.write_back_latency.counts.assign(kDurationBuckets, 0);
  std::vector<uint64_t> by_reason(kRejectReasons, 0);
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  for (const auto& lane : lanes_) {
    const LaneCounters& c = lane->counters();
    s.pushes += get(c.pushes);
    s.bytes_in += get(c.bytes_in);
    s.bytes_out += get(c.bytes_out);
    s.pulls += get(c.pulls);
    s.clocks += c.clocks.load(std::memory_order_acquire);  // after lane 0's minimum it follows (ServerLane)
    s.rejected += get(c.rejected);
    s.dropped += get(c.dropped);
    s.workers_left += get(c.workers_left);
    s.workers_lost += get(c.workers_lost);
    s.min_clock = std::min(s.min_clock, get(c.min_clock));
    s.longest_setup_pause_us = std::max(s.longest_setup_pause_us, get(c.longest_setup_us));
    s.stall_warnings += get(c.stall_warnings);
    for (uint32_t w = 0; w < options_.workers; ++w) {
      s.applied_per_worker[w] += get(c.applied[w]);
      s.rejected_per_worker[w] += get(c.rejected_by[w]);
      s.bytes_in_per_worker[w] += get(c.bytes_from[w]);
    }
    for (size_t t = 0; t < s.staleness.size(); ++t) s.staleness[t] += get(c.staleness[t]);
    s.staleness_sum += get(c.staleness_sum);
    s.staleness_max = std::max(s.staleness_max, get(c.staleness_max));
    s.max_clock = std::max(s.max_clock, get(c.max_clock));
    for (size_t r = 0; r < kRejectReasons; ++r) by_reason[r] += get(c.rejected_for[r]);
    for (size_t b = 0; b < kDurationBuckets; ++b) {
      s.apply_latency.counts[b] += get(c.apply_latency[b]);
      s.write_back_latency.counts[b] += get(c.write_back_latency[b]);
    }
    s.apply_latency.sum_ns += get(c.apply_ns);
    s.write_back_latency.sum_ns += get(c.write_back_ns);
  }
  // Every lane sees every connection: the first one speaks for the server.
  if (!lanes_.empty())
    for (uint32_t w = 0; w < options_.workers; ++w) s.workers_connected += lanes_[0]->live(w) ? 1 : 0;
  for (size_t r = 0; r < kRejectReasons; ++r)
    s.rejected_by_reason.emplace_back(reject_reason_name(static_cast<RejectReason>(r)), by_reason[r]);
  s.checkpoints = checkpointer_.written();
  s.checkpoint_failures = checkpointer_.failed();
  s.checkpoint_updates = checkpointer_.last_updates();
  s.final_checkpoint_failed = final_checkpoint_failed_.load();
  s.resumed_updates = resumed_updates_;
  return s;
}

void ServerImpl::report(Clock::time_point now) {
  if (now - last_waiting_ > 10s) {
    last_waiting_ = now;
    std::string missing, refused;
    size_t quoted = 0;
    for (uint32_t w = 0; w < options_.workers; ++w) {
      if (admitted_at_[w] || !awaited_[w] || forsaken_[w]) continue;
      missing += (missing.empty() ? "" : ", ") + std::to_string(w);
      // Why it waits, where this server refused that worker (the refusal's own line is long gone by then).
      if (!last_refusal_[w].empty() && quoted++ < 3)
        refused += "; worker " + std::to_string(w) + " was refused: " + last_refusal_[w].substr(0, 300);
    }
    if (!missing.empty())
      logf(LogLevel::kInfo, "%s: waiting for workers %s to connect to %s (the clock holds at %llu)%s", tag_.c_str(),
           missing.c_str(), address().c_str(), static_cast<unsigned long long>(stats().min_clock), refused.c_str());
    // Admitted, then gone before it reached every lane (killed while it
    // connected): the lanes it never reached hold their clock for it.
    for (uint32_t w = 0; w < options_.workers; ++w) {
      if (!admitted_at_[w] || now - *admitted_at_[w] < kReachWindow) continue;  // one connecting now
      std::string lanes;
      for (const auto& lane : lanes_)
        if (!lane->reached(w)) lanes += (lanes.empty() ? "" : ", ") + std::to_string(lane->index());
      if (!lanes.empty())
        logf(LogLevel::kWarn,
             "%s: worker %u was admitted but never reached lane(s) %s, whose clock holds for it: it "
             "stopped while it connected? Start it again with the same id",
             tag_.c_str(), w, lanes.c_str());
    }
  }
  if (options_.stats_interval.count() == 0 || now - last_report_ < options_.stats_interval) return;
  ServerStats s = stats();
  logf(LogLevel::kInfo, "%s",
       interval_report(s, last_stats_, std::chrono::duration<double>(now - last_report_).count(), lanes_.size())
           .c_str());
  last_stats_ = s;
  last_report_ = now;
}

}  // namespace ps
}  // namespace rdmaps
