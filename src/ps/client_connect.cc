// A worker's connection to one server: Hello to its control thread, then
// one endpoint per lane, each given the receive region and an inbox.
#include <algorithm>
#include <cstring>

#include "src/ps/client_impl.h"

namespace rdmaps::ps {

using transport::Access;

// Puts land where the worker tells the server; over active messages the
// worker decides alone. Where the transport cannot write registered memory
// natively (shared memory), UCX emulates those puts and the worker's UCX
// applies every lane's alone: pulls took 0.8 of the copy's time with one
// server thread, iterations 1.2-1.45 of its time with two (docs/benchmarks.md,
// "Session 19"), so only PutLanding::kOn asks for them there.
void ClientImpl::offer_landings(ServerLink& link, const transport::Endpoint& ep, LaneHello& hello) {
  const bool offer = !link.use_am && (config_.put_landing == PutLanding::kOn ||
                                      (config_.put_landing == PutLanding::kAuto && ep.rma_to_registered()));
  link.offers_landings = offer;
  hello.landing_regions.clear();
  for (size_t i = 0; offer && i < std::min(registered_.size(), kMaxLandingRegions); ++i)
    hello.landing_regions.push_back(registered_[i].region->descriptor(Access::kRemoteWrite).serialize());
}

Hello ClientImpl::hello() const {
  Hello h;
  h.worker = options_.worker;
  h.workers = options_.workers;
  h.staleness = config_.staleness;
  h.push_path = static_cast<uint32_t>(config_.push_path);
  h.rule = RuleParams::from(config_);
  h.rule_stated = config_.rule_stated ? 1 : 0;
  h.reconnect_ms = config_.reconnect_ms;
  h.tensors = declared_;
  h.servers = static_cast<uint32_t>(options_.servers.size());
  h.shard_floats = config_.shard_floats;
  h.job = job_;
  return h;
}

Welcome ClientImpl::ask(transport::Endpoint& control, const Hello& hello, const std::string& address,
                        std::chrono::milliseconds timeout) const {
  control.send_control(encode(hello), timeout);
  std::vector<uint8_t> answer;
  try {
    answer = control.recv_control(timeout);
  } catch (const Error& e) {
    // A bare "no control message within 3000 ms" where the server held the Hello of an id still connected.
    if (e.code() != Errc::kTimeout || hello.probe || timeout > kPredecessorWait + std::chrono::seconds(1)) throw;
    throw Error(e.code(), std::string(e.what()) + " (a server holds a Hello up to " +
                              std::to_string(kPredecessorWait.count()) + " s while an earlier connection of worker " +
                              std::to_string(options_.worker) +
                              " still looks live, before it refuses it: is that worker id in use by another "
                              "process? A timeout above that hears the refusal)");
  }
  Welcome welcome = decode_welcome(answer, address);
  if (welcome.accepted == kRefused || welcome.accepted == kRefusedForNow || welcome.accepted == kRefusedWithoutTheJob)
    throw Refusal("server " + address + " refused worker " + std::to_string(options_.worker) + ": " + welcome.reason,
                  welcome.accepted, welcome.instance);
  return welcome;
}

// A connect that failed names which server of the list it was: the address
// alone ("connecting to 10.0.0.7:7000: nobody listened there") left a
// launched worker, given the list by its launcher, to guess.
std::unique_ptr<transport::Endpoint> ClientImpl::connect_control(uint32_t index, std::chrono::milliseconds timeout,
                                                                 transport::IfRefused if_refused) {
  try {
    return context_->connect(transport::SockAddr::parse(options_.servers[index]), timeout, {}, if_refused);
  } catch (const Error& e) {
    throw Error(e.code(),
                "server " + std::to_string(index) + " of " + std::to_string(options_.servers.size()) + ": " + e.what());
  }
}

Welcome ClientImpl::probe(uint32_t index) {
  const std::string& address = options_.servers[index];
  auto control = connect_control(index, options_.timeout, transport::IfRefused::kRetry);
  Hello h = hello();
  h.server_index = index;
  h.probe = 1;
  const Welcome answer = ask(*control, h, address, options_.timeout);
  if (answer.accepted != kWouldAdmit)
    throw Error(Errc::kProtocol, "server " + address + " admitted a probe of worker " +
                                     std::to_string(options_.worker) + " instead of answering it");
  probes_.resize(options_.servers.size());
  if (probes_[index]) probes_[index]->close_later();  // asked again: the server keeps the newer
  probes_[index] = std::move(control);
  return answer;
}

void ClientImpl::end_probes() {
  for (auto& p : probes_)
    if (p) p->close_later();
  probes_.clear();
}

void ClientImpl::probe_all() {
  std::vector<uint64_t> instances;
  std::vector<Welcome> answers;
  // One server listed twice (an address and a name of it) would take this
  // worker once and refuse it the second time as "already connected"; its
  // probe at the second index is refused for the index, with its instance.
  const auto listed_twice = [&](uint32_t i, uint64_t instance) {
    for (uint32_t j = 0; j < i; ++j)
      if (instance != 0 && instance == instances[j])
        throw Error(Errc::kInvalidArgument, "servers " + std::to_string(j) + " (" + options_.servers[j] + ") and " +
                                                std::to_string(i) + " (" + options_.servers[i] +
                                                ") of the list are one server: list each server once");
  };
  for (uint32_t i = 0; i < options_.servers.size(); ++i) {
    Welcome answer;
    try {
      answer = probe(i);
    } catch (const Refusal& e) {
      listed_twice(i, e.instance);
      throw;
    }
    listed_twice(i, answer.instance);
    instances.push_back(answer.instance);
    answers.push_back(std::move(answer));
  }
  // A server found empty while another holds parameters is asked again:
  // the job's first workers may have joined every server and pushed
  // between two probes (a worker that started late, on a loaded machine,
  // was refused so). They joined it before they pushed, so it has a table
  // by now, unless it really started empty.
  const bool any_holding =
      std::any_of(answers.begin(), answers.end(), [](const Welcome& a) { return a.resumed == kProbeHolding; });
  for (uint32_t i = 0; i < answers.size() && any_holding; ++i)
    if (answers[i].resumed == kProbeFresh) answers[i] = probe(i);
  check_servers_agree(answers);
  std::string holding, empty;  // addresses of servers with a job's parameters, and without
  for (uint32_t i = 0; i < answers.size(); ++i) {
    if (answers[i].resumed == kProbeStarted) continue;  // a job starting: its first workers are joining
    std::string& list = answers[i].resumed == kProbeHolding ? holding : empty;
    list += (list.empty() ? "" : ", ") + options_.servers[i];
  }
  // Part of the table trained, part zeros (a server whose checkpoints were
  // not there, or restarted without --resume): refused before any Hello, so
  // that no server fixes its table or writes a checkpoint of zeros for it.
  // rdmaps-train's first worker kept the resumed weights: chance accuracy, exit 0.
  if (!holding.empty() && !empty.empty())
    throw Error(Errc::kInvalidArgument,
                "server(s) " + holding + " hold a job's parameters (resumed from a checkpoint, or updated) but " +
                    empty +
                    " started empty: the model would be part trained, part zeros. Give every server its "
                    "checkpoints (each index has its own in --checkpoint-dir) and --resume, or start them all afresh");
  // The job the servers holding a table have (they agree: checked above), else server 0's offer: a fresh
  // server 0 beside a started server 1 (restarted before its first checkpoint) took its own, and server 1
  // then refused this worker and every later one.
  job_ = answers[0].job;
  for (const Welcome& a : answers)
    if (a.resumed != kProbeFresh && a.job != 0) {
      job_ = a.job;
      break;
    }
  // Every server said yes: each is told the worker joins them now, so that
  // one it dies before reaching counts it lost, as those it joined do. Told
  // all, though one fails: those told count it lost, as the rest would
  // (the worker ends here); untold, they held the clock for it.
  Hello notice = hello();
  notice.probe = kProbeJoining;
  notice.tensors.resize(1);  // the table was checked: one tensor keeps the notice small
  std::optional<Error> failed;
  for (uint32_t i = 0; i < probes_.size(); ++i) try {
      notice.server_index = i;
      probes_[i]->send_control(encode(notice), options_.timeout);
    } catch (const Error& e) {
      if (!failed) failed = e;
    }
  if (failed) throw *failed;
}

// Each server checks a worker against itself only: servers started for
// other worker counts, or applying other rules to a worker that stated none,
// or resumed from different runs' checkpoints, each admitted it, and trained
// halves of one model by different rules, held the worker at the clock of
// one forever, or joined halves of two models.
void ClientImpl::check_servers_agree(const std::vector<Welcome>& answers) const {
  const auto refuse = [&](size_t i, const std::string& what, const std::string& first, const std::string& other,
                          const char* fix) {
    throw Error(Errc::kInvalidArgument, "servers 0 (" + options_.servers[0] + ") and " + std::to_string(i) + " (" +
                                            options_.servers[i] + ") of the job disagree on " + what + ": " + first +
                                            " vs " + other + ": " + fix);
  };
  for (size_t i = 1; i < answers.size(); ++i) {
    if (answers[i].workers != answers[0].workers)
      refuse(i, "the workers they expect", std::to_string(answers[0].workers), std::to_string(answers[i].workers),
             "give every server the job's --workers");
    if (std::string d = answers[0].rule.difference(answers[i].rule); !d.empty())
      refuse(i, "the update rule they would apply to this worker", d.substr(0, d.find(" vs ")),
             d.substr(d.find(" vs ") + 4),
             "give every server the same --rule and parameters, or every one --rule-from-workers");
  }
  // Servers holding parameters (or a table) hold one job's: servers resume
  // each its own newest checkpoint, and one directory may hold two runs'.
  const auto holds = [](const Welcome& a) { return a.resumed != kProbeFresh && a.job != 0; };
  for (size_t i = 0; i < answers.size(); ++i)
    for (size_t j = i + 1; j < answers.size() && holds(answers[i]); ++j)
      if (holds(answers[j]) && answers[j].job != answers[i].job)
        throw Error(Errc::kInvalidArgument,
                    "servers " + std::to_string(i) + " (" + options_.servers[i] + ") and " + std::to_string(j) + " (" +
                        options_.servers[j] + ") hold different jobs' parameters (jobs " + job_text(answers[i].job) +
                        " and " + job_text(answers[j].job) +
                        "): they resumed checkpoints of different runs. Give each server its checkpoints of one run "
                        "(move the other run's away), or start them all afresh");
}

// The server's control thread admits this worker and names its lanes; the
// worker then connects to each lane, handing it the receive region.
Welcome ClientImpl::connect_one(uint32_t index, transport::IfRefused if_refused, Clock::time_point deadline) {
  // Each wait takes at most what is left of `deadline`: a reconnect's attempt
  // with several lanes waited the whole timeout at each step, past its window.
  const auto timeout = [&] { return std::min(bound_of(deadline), options_.timeout); };
  ServerLink& link = links_[index];
  link.index = index;
  link.address = options_.servers[index];
  auto control = connect_control(index, timeout(), if_refused);
  link.range = partition_->server_range(index);
  link.shards = partition_->shard_count(index);
  Hello h = hello();
  h.server_index = index;
  h.rejoin_instance = link.instance;  // 0 at the first connect
  Welcome welcome = ask(*control, h, link.address, timeout());
  if (welcome.accepted != kAdmitted)
    throw Error(Errc::kProtocol, "server " + link.address + " answered a Hello as if it were a probe");
  if (welcome.range_begin != link.range.begin || welcome.range_end != link.range.end ||
      welcome.shard_floats != config_.shard_floats ||
      welcome.lanes.back().first_shard + welcome.lanes.back().shards != link.shards)
    // Refused for good: a reconnect that met it (a server back with another
    // index or layout) tried again for its whole window.
    throw Refusal(
        "server " + link.address + " serves floats [" + std::to_string(welcome.range_begin) + ", " +
            std::to_string(welcome.range_end) + ") with shards of " + std::to_string(welcome.shard_floats) +
            ", this worker expected [" + std::to_string(link.range.begin) + ", " + std::to_string(link.range.end) +
            ") and " + std::to_string(config_.shard_floats) +
            ": check the server list (every server of the job, in index order) and --shard-floats on both sides",
        kRefused);
  link.use_am = welcome.push_path == static_cast<uint32_t>(PushPath::kAm);
  link.receive_layout = ReceiveLayout{welcome.lanes.size(), link.shards, link.range.size()};
  // Registered once, remote-write for this server's lanes only.
  link.receive = context_->allocate(link.receive_layout.bytes(), Access::kRemoteWrite);
  std::memset(link.receive->data(), 0, link.receive->size());
  LaneHello lane_hello;
  lane_hello.worker = options_.worker;
  lane_hello.token = welcome.token;
  lane_hello.clock = clock_;
  lane_hello.receive_region = link.receive->descriptor(Access::kRemoteWrite).serialize();
  const auto host = transport::SockAddr::parse(link.address);
  link.lanes.resize(welcome.lanes.size());
  link.lane_of.assign(link.shards, 0);
  for (uint32_t l = 0; l < welcome.lanes.size(); ++l) {
    Lane& lane = link.lanes[l];
    const LaneInfo& info = welcome.lanes[l];
    lane.index = l;
    lane.first_shard = info.first_shard;
    lane.shards = info.shards;
    const std::string where = link.address + " lane " + std::to_string(l);
    const auto lane_address = host.with_port(static_cast<uint16_t>(info.port));
    lane.ep = context_->connect(lane_address, timeout(), where + " (" + lane_address.to_string() + ")");
    if (l == 0) offer_landings(link, *lane.ep, lane_hello);  // every lane of a server reaches it the same way
    lane.ep->send_control(encode(lane_hello), timeout());
    LaneWelcome lw = decode_lane_welcome(lane.ep->recv_control(timeout()), where);
    const std::string refused = "server " + where + " refused worker " + std::to_string(options_.worker) + ": ";
    // For now (out of files or memory for it): a retry may pass, and a reconnect says so at its end.
    if (lw.accepted == kRefusedForNow) throw Refusal(refused + lw.reason, kRefusedForNow);
    if (lw.accepted != kAdmitted) throw Error(Errc::kProtocol, refused + lw.reason);
    lane.landings = lane.landings_offered = lane_hello.landing_regions.size();
    auto inbox = lane.ep->import(transport::RegionDescriptor::parse(lw.inbox_region, where));
    lane.inbox = std::make_unique<InboxWriter>(*context_, *lane.ep, std::move(inbox),
                                               SlotLayout{config_.shard_floats * sizeof(float)}, welcome.inbox_slots,
                                               link.use_am);
    clock_ = std::max(clock_, lw.start_clock);
    lane.clock_sent = lw.start_clock;  // the lanes before it may be a clock or two behind: clock() catches them up
    by_endpoint_[lane.ep.get()] = {index, l};
    for (uint32_t k = 0; k < info.shards; ++k) link.lane_of[info.first_shard + k] = l;
  }
  link.shard_stamp.assign(link.shards, 0);
  link.have_shard.assign(link.shards, false);
  link.delivered.assign(link.shards, 0);
  return welcome;
}

}  // namespace rdmaps::ps
