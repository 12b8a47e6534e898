#include "src/launch/rendezvous.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/api/utf8.h"
#include "src/launch/rendezvous_roll.h"
#include "src/launch/server_list.h"
#include "transport/address.h"
#include "transport/auth.h"
#include "transport/cancel.h"
#include "transport/process_id.h"

namespace rdmaps::launch {
namespace {

using transport::TcpSocket;
using Clock = std::chrono::steady_clock;

// A connection opens with "rdmaps-rendezvous 5 challenge", answered by
// "- challenge HOST_NONCE", fresh for that connection. Requests then read
// "rdmaps-rendezvous 5 NONCE PROOF WORLD SERVERS RANK ADDRESS|- PROCESS
// LAUNCH_ID" (PROCESS is PID@HOST#RANDOM, the asking process; the launch id is
// the rest of the line, perhaps empty; PROOF is "-" without a secret) and are
// answered "PROOF TEXT", TEXT "ok A0,A1,...", "wait missing R,R-R,..." (then,
// a line each, why rank 0 refused a missing rank) or "error WHY". Each proof
// covers both nonces: a request recorded on one connection proves nothing on
// another (another job's rendezvous with the same secret and launch id
// included), and an answer belongs to one request. A message of another
// version gets a bare "error WHY", as every version has answered it.
//
// "ok" waits for every rank, not only the servers, as MPI_Init and torchrun's
// rendezvous do: a rank that never came (refused, or never started) is named
// to all, within the launch timeout, instead of leaving the servers waiting
// for it for good; and two processes that believe they are one rank meet
// there and the second is refused (it trained that rank's share twice).
constexpr const char* kTag = "rdmaps-rendezvous";
constexpr int kVersion = 5;
constexpr size_t kMaxRequest = 4096;                        // an address is a host:port
constexpr auto kProveWithin = std::chrono::seconds(5);      // a connection's first proven request
constexpr auto kIdleAfterProof = std::chrono::seconds(10);  // ranks ask every 100 ms until "ok"
constexpr auto kStillAsking = std::chrono::seconds(3);      // ranks ask at least every second

std::vector<uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }
std::span<const uint8_t> span_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

std::string shown(const std::string& launch_id) { return launch_id.empty() ? "no launch id" : "'" + launch_id + "'"; }

// "-" without a secret, else the hex HMAC of the role, both nonces and the text.
std::string proof_of(const std::string& secret, std::string_view role, const transport::Nonce& host_nonce,
                     const transport::Nonce& nonce, std::string_view text) {
  if (secret.empty()) return "-";
  return transport::to_hex(transport::mac(secret, {span_of(role), host_nonce, nonce, span_of(text)}));
}

bool proves(const std::string& secret, std::string_view role, const transport::Nonce& host_nonce,
            const transport::Nonce& nonce, std::string_view text, std::string_view proof) {
  transport::Proof given;
  return transport::from_hex(proof, given) &&
         transport::same_proof(given, transport::mac(secret, {span_of(role), host_nonce, nonce, span_of(text)}));
}

// The next space-separated field of `rest`, which moves past it and one space.
std::string_view next_field(std::string_view& rest) {
  const size_t end = std::min(rest.find(' '), rest.size());
  const std::string_view field = rest.substr(0, end);
  rest.remove_prefix(std::min(end + 1, rest.size()));
  return field;
}

struct Connection {
  TcpSocket socket;
  std::string peer;
  transport::MessageReader reader;
  transport::MessageWriter writer;
  Clock::time_point deadline;                 // to prove a request, or to ask again
  std::optional<transport::Nonce> challenge;  // sent once the peer asks for it
  int64_t rank = -1;                          // the rank its last proven request came from
  std::string process;                        // PID@HOST#RANDOM of that request
  bool closing = false;                       // closes once its answer is sent
  bool gone = false;                          // done with, awaiting its removal in this pass
};

// "pid 4242 on node7" of a request's PID@HOST#RANDOM.
std::string process_shown(const std::string& process) {
  const size_t at = process.find('@'), hash = process.rfind('#');
  if (at == std::string::npos || hash == std::string::npos || hash < at) return "process '" + process + "'";
  return "pid " + process.substr(0, at) + " on " + process.substr(at + 1, hash - at - 1);
}

// Rank 0's refusal or wait as a rank shows it: each line printable, at most
// 2000 bytes, and 4 lines (a program on the port, or a peer's launch id or
// process quoted there, put escapes, carriage returns or a megabyte in every rank's error).
std::string answer_shown(std::string_view text) {
  std::string out;
  for (size_t at = 0, lines = 0; at <= text.size() && lines < 4; ++lines) {
    const size_t end = std::min(text.find('\n', at), text.size());
    out += (lines ? "\n" : "") + one_line(text.substr(at, std::min<size_t>(end - at, 2000)));
    at = end + 1;
  }
  return out;
}

// "0.3 s", "86400 s", "1000000000 s" (five characters of to_string showed 1e9 s as "10000 s").
std::string seconds_text(std::chrono::milliseconds t) {
  char text[48];
  std::snprintf(text, sizeof(text), "%.10g s", static_cast<double>(t.count()) / 1000.0);
  return text;
}

// The variable that moves a job's rendezvous port: RDMAPS_MASTER_PORT where
// it gave the port (under torchrun, MASTER_PORT is the agent's), else MASTER_PORT.
std::string port_name(const Placement& p) {
  return p.master_port_var == "RDMAPS_MASTER_PORT" ? "RDMAPS_MASTER_PORT" : "MASTER_PORT";
}

}  // namespace

std::string wildcard_for(const std::string& host, uint16_t port) {
  const std::string any = "0.0.0.0:" + std::to_string(port);
  if (host.empty()) return any;
  try {
    const auto a = transport::SockAddr::parse(transport::join_host_port(host, port));
    return a.get()->sa_family == AF_INET6 ? "[::]:" + std::to_string(port) : any;
  } catch (const Error&) {
    return any;
  }
}

std::string rendezvous_address(const Placement& p) { return transport::join_host_port(p.master_addr, p.master_port); }

RendezvousHost::RendezvousHost(const Placement& p, std::string secret)
    : world_size_(p.world_size),
      num_servers_(p.num_servers),
      launch_id_(p.launch_id),
      secret_(std::move(secret)),
      port_name_(port_name(p)) {
  try {
    // The ranks connect to MASTER_ADDR as resolved: an IPv4 wildcard never
    // answers MASTER_ADDR=::1. A loopback one (not a name that resolves to
    // 127.0.1.1: other hosts reach that at a real address) is served there
    // alone: every rank is on this host, and the wildcard offered a launch
    // without a secret (--insecure) to the network.
    std::string where = wildcard_for(p.master_addr, p.master_port);
    if (p.every_rank_is_local()) where = transport::SockAddr::parse(rendezvous_address(p)).to_string();
    listener_ = TcpSocket::listen(transport::SockAddr::parse(where),
                                  "every rank dials " + port_name_ + ": give them all the same free one");
  } catch (const Error& e) {
    throw Error(e.code(), "rank 0 cannot host the job's rendezvous (port " + std::to_string(p.master_port) + ", from " +
                              p.master_port_var + "): " + e.what() +
                              "; is another process of this job also rank 0, or another job on this host using "
                              "the same " +
                              port_name_ + " (an earlier one still running)?");
  }
  thread_ = std::thread([this] { serve(); });
}

RendezvousHost::~RendezvousHost() {
  stop_ = true;
  // Wakes its poll() (Linux reports a shut listener readable): rank 0's exit waited up to its 100 ms timeout.
  ::shutdown(listener_.fd(), SHUT_RDWR);
  thread_.join();
}

void RendezvousHost::serve() {
  RendezvousRoll roll(world_size_, num_servers_);
  std::vector<std::unique_ptr<Connection>> connections;        // in the order they came
  std::vector<std::pair<int64_t, const Connection*>> claimed;  // this pass: ranks a connection claimed, and it
  // Another live connection of `rank` than c (slots emptied by this pass's erase_if hold null).
  auto other_of = [&](int64_t rank, const Connection& c) -> Connection* {
    for (const auto& other : connections)
      if (other && !other->gone && other.get() != &c && other->rank == rank) return other.get();
    return nullptr;
  };
  // A line per refused rank (a second at most for each), so that two refused
  // at once are both said; requests that name no rank of this world share one.
  std::map<int64_t, Clock::time_point> last_logged;
  // `rank` -1: proven, of no rank of this world (another WORLD_SIZE); -2: unproven (kept apart, so that a
  // peer without the secret asking once a second cannot keep a proven refusal from the log).
  auto log_refusal = [&](LogLevel level, int64_t rank, const std::string& peer, const std::string& error) {
    if (rank >= static_cast<int64_t>(world_size_)) rank = -1;
    auto& last = last_logged[rank];
    if (const auto now = Clock::now(); now - last >= std::chrono::seconds(1)) {
      last = now;
      log(level, "rendezvous: refused " + peer + ": " + error.substr(6, 512));
    }
  };
  // What the proven request of a rank says back (no proof of its own yet).
  auto answer = [&](Connection& c, std::string_view body, uint64_t* rank_out) -> std::string {
    std::istringstream in{std::string(body)};
    std::string address, process;
    uint64_t world = 0, servers = 0, rank = 0;
    if (!(in >> world >> servers >> rank >> address >> process)) return "error not a rendezvous request";
    std::string launch;
    std::getline(in >> std::ws, launch);
    if (launch != launch_id_)
      return "error rank " + std::to_string(rank) + " is of another launch (" + shown(launch) + ") than rank 0 (" +
             shown(launch_id_) + "): two jobs share this MASTER_ADDR:" + port_name_ + "; give each job its own " +
             port_name_;
    if (world != world_size_ || servers != num_servers_)
      return "error rank " + std::to_string(rank) + " was started with world size " + std::to_string(world) + " and " +
             std::to_string(servers) + " server(s), rank 0 with " + std::to_string(world_size_) + " and " +
             std::to_string(num_servers_) + ": one job, one launch";
    if (rank >= world) return "error rank " + std::to_string(rank) + " is not below the world size";
    *rank_out = rank;
    if (address != "-") {
      // Checked as an entry of a list typed by hand is (a bad one was found by
      // the workers as they dialled it), a comma too: the answer lists the servers comma-separated.
      try {
        check_server_list({address}, "server rank " + std::to_string(rank) + "'s address");
      } catch (const Error& e) {
        return std::string("error ") + e.what();
      }
      if (rank >= num_servers_)
        return "error rank " + std::to_string(rank) + " registers an address but only ranks below " +
               std::to_string(num_servers_) + " serve";
    }
    // Two processes of one rank (a RANK exported by hand, a script started
    // twice) both trained that rank's share: the second to ask is refused
    // while the first still asks. Once every rank has come, a new process is
    // a rank restarted by hand, or a late twin the servers hold off while
    // the first runs: said here, not refused.
    // One that stopped asking (its node died without a FIN: the connection
    // stays open here until it idles out) is no twin: a restart elsewhere
    // takes its place instead of being refused for good.
    if (Connection* first = other_of(static_cast<int64_t>(rank), c); first && first->process != process) {
      if (Clock::now() - (first->deadline - kIdleAfterProof) < kStillAsking)
        return "error two processes are rank " + std::to_string(rank) + ": " + process_shown(first->process) + " (" +
               first->peer + ") asked first, then " + process_shown(process) +
               "; do launcher variables disagree (a RANK exported by hand, a rank started twice)?";
      first->closing = true;
    }
    const std::string before = roll.process_of(static_cast<uint32_t>(rank));
    c.process = process;
    if (std::string why = roll.arrive(static_cast<uint32_t>(rank), address, process); !why.empty())
      return "error " + why;
    if (roll.complete() && !before.empty() && before != process)  // taken: else its refusal says it all
      log(LogLevel::kWarn, "rendezvous: rank " + std::to_string(rank) + " asks again from " + process_shown(process) +
                               ", after " + process_shown(before) + ": restarted by hand, or started twice?");
    return roll.answer();
  };
  // Answers one request on c; a request that proves nothing is answered
  // with nothing about this job, and its connection closes.
  auto take = [&](Connection& c, std::string_view request) {
    std::string_view rest = request;
    const std::string_view tag = next_field(rest), version = next_field(rest);
    if (tag != kTag) {
      c.writer.queue(bytes_of("error not a rendezvous request"));
      c.closing = true;
      return;
    }
    if (version != std::to_string(kVersion)) {
      c.writer.queue(bytes_of("error this rank speaks rendezvous version " + std::string(version.substr(0, 8)) +
                              ", rank 0 speaks " + std::to_string(kVersion) +
                              ": every rank of a job must run the same rdmaps"));
      c.closing = true;
      return;
    }
    if (rest == "challenge") {
      if (!c.challenge) c.challenge = transport::random_nonce();
      c.writer.queue(bytes_of("- challenge " + transport::to_hex(*c.challenge)));
      return;
    }
    transport::Nonce nonce;
    const bool has_nonce = transport::from_hex(next_field(rest), nonce);
    const std::string_view proof = next_field(rest), body = rest;
    // The rank a request names, proven or not: a refusal is quoted to the
    // others while that rank is missing, so the job's timeout says why.
    uint64_t named = UINT64_MAX;
    {
      std::istringstream fields{std::string(body.substr(0, 64))};
      std::string world, servers;
      if (!(fields >> world >> servers >> named)) named = UINT64_MAX;
    }
    // `proven`: the rank it names may key the log's limit; an unproven one shares one line a second with all
    // such (a peer without the secret naming every rank logged world-size lines a second).
    auto refuse = [&](LogLevel level, const std::string& text, const std::string& reply, bool proven) {
      log_refusal(level, !proven ? -2 : named < world_size_ ? static_cast<int64_t>(named) : -1, c.peer, text);
      roll.refused(named, "by rank 0 (from " + c.peer + "): " + text.substr(6), proven);
      c.writer.queue(bytes_of(reply));
      c.closing = true;
    };
    std::string refusal;
    if (!has_nonce)
      refusal = "error not a rendezvous request";
    else if (!c.challenge)
      refusal = "error a request before its connection's challenge";
    else if (!secret_.empty() && proof == "-")
      refusal =
          "error the request proves no secret, and rank 0 has one: give every rank the same RDMAPS_SECRET "
          "(or --secret-file)";
    else if (!secret_.empty() && !proves(secret_, "rendezvous request", *c.challenge, nonce, body, proof))
      refusal =
          "error the request does not prove rank 0's secret: give every rank the same RDMAPS_SECRET "
          "(or --secret-file); or another job with another secret uses this MASTER_ADDR:" +
          port_name_ + " (give each job its own " + port_name_ + ")";
    if (!refusal.empty()) return refuse(LogLevel::kWarn, refusal, "- " + refusal, false);
    uint64_t rank = UINT64_MAX;
    const std::string text = answer(c, body, &rank);
    const std::string reply = proof_of(secret_, "rendezvous answer", *c.challenge, nonce, text) + " " + text;
    // The refused rank ends, and so may its connection.
    if (text.rfind("error ", 0) == 0) return refuse(LogLevel::kError, text, reply, true);
    c.writer.queue(bytes_of(reply));
    c.deadline = Clock::now() + kIdleAfterProof;
    if (rank == UINT64_MAX || static_cast<int64_t>(rank) == c.rank) return;
    c.rank = static_cast<int64_t>(rank);
    claimed.emplace_back(c.rank, &c);  // the others of its rank close after this pass
  };

  Clock::time_point last_warned{};
  while (!stop_) {
    std::vector<pollfd> fds{{listener_.fd(), POLLIN, 0}};
    for (auto& c : connections)
      fds.push_back({c->socket.fd(), static_cast<short>(c->writer.empty() ? POLLIN : POLLOUT), 0});
    ::poll(fds.data(), fds.size(), 100);
    if (stop_) break;
    transport::SockAddr peer;
    try {
      // A table's worth a turn: a flood as fast as accept() drains kept the
      // answers from ever being sent.
      for (size_t taken = 0; taken < kMaxPending; ++taken) {
        TcpSocket s = listener_.try_accept(&peer);
        if (!s.valid()) break;
        // A full house makes room by dropping the oldest connection that proved nothing yet.
        if (std::count_if(connections.begin(), connections.end(), [](const auto& c) { return c->rank < 0; }) >=
            static_cast<std::ptrdiff_t>(kMaxPending))
          connections.erase(
              std::find_if(connections.begin(), connections.end(), [](const auto& c) { return c->rank < 0; }));
        connections.push_back(std::make_unique<Connection>(
            Connection{std::move(s), peer.to_string(), {}, {}, Clock::now() + kProveWithin, {}, -1, {}, false, false}));
      }
    } catch (const Error& e) {
      if (stop_) break;  // the destructor shut the listener between the check above and the accept
      // Out of files, most likely (ranks of a large launch at once): the
      // connection waits in the backlog until an answered rank's closes. The
      // listener stays readable meanwhile, so pause instead of spinning.
      if (const auto now = Clock::now(); now - last_warned >= std::chrono::seconds(1)) {
        last_warned = now;
        log(LogLevel::kWarn, std::string("rendezvous: ") + e.what() + "; retrying");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const auto now = Clock::now();
    // take() runs inside erase_if, whose moved-from slots hold null: the
    // connection an earlier one of its rank left is closed after the pass
    // (looked for during it, a rank's first request met a null slot and the
    // host crashed: a launch's srun-rendezvous run, session 46).
    claimed.clear();
    std::vector<int64_t> left;  // ranks whose connection went this pass
    auto done_with = [&](Connection& c) {
      try {
        // One answer at a time: the next request is read once the last answer is sent.
        if (!c.writer.flush(c.socket, c.peer)) return now > c.deadline;
        if (c.closing) return true;
        if (c.reader.poll(c.socket, c.peer, kMaxRequest)) {
          const auto request = c.reader.take();
          take(c, std::string_view(reinterpret_cast<const char*>(request.data()), request.size()));
          if (c.writer.flush(c.socket, c.peer) && c.closing) return true;
        }
        return now > c.deadline;
      } catch (const Error&) {
        return true;  // gone, or sent something no rank sends: its own rank reports its failure
      }
    };
    std::erase_if(connections, [&](const std::unique_ptr<Connection>& owned) {
      owned->gone = done_with(*owned);
      if (owned->gone && owned->rank >= 0) left.push_back(owned->rank);
      return owned->gone;
    });
    // One connection per rank: a rank that connected again left the other.
    for (const auto& [rank, owner] : claimed)
      for (auto& other : connections)
        if (other.get() != owner && other->rank == rank) other->closing = true;
    for (const int64_t rank : left)
      if (std::none_of(connections.begin(), connections.end(), [&](const auto& c) { return c->rank == rank; }))
        roll.leave(static_cast<uint32_t>(rank));
  }
}

std::string this_process() {
  // Made again in a forked child (a launcher's helper, a DataLoader): a copy
  // of its parent's would hide the two from each other at the rendezvous.
  static std::mutex mu;
  static pid_t made_for = -1;
  static std::string process;
  std::lock_guard<std::mutex> lock(mu);
  if (made_for == transport::this_process_id()) return process;
  made_for = transport::this_process_id();
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0 || !host[0]) std::snprintf(host, sizeof(host), "unknown-host");
  std::string name(host, ::strnlen(host, 64));
  for (char& ch : name)  // a field of a space-separated request
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') ch = '_';
  // The random part tells apart equal pids on hosts of one name (containers).
  process = std::to_string(made_for) + "@" + name + "#" + transport::to_hex(transport::random_nonce()).substr(0, 8);
  return process;
}

std::vector<std::string> rendezvous(const Placement& p, const std::string& address, std::chrono::milliseconds timeout,
                                    const std::string& secret, const std::string& process) {
  const auto started = Clock::now();
  auto deadline = started + timeout;
  const std::string where = rendezvous_address(p);
  const std::string from = p.master_addr_var + " and " + p.master_port_var;  // what gave `where`
  std::string seconds = seconds_text(timeout);
  const std::string body = std::to_string(p.world_size) + " " + std::to_string(p.num_servers) + " " +
                           std::to_string(p.rank) + " " + (address.empty() ? "-" : address) + " " + process + " " +
                           p.launch_id;
  const std::string head = std::string(kTag) + " " + std::to_string(kVersion) + " ";
  const size_t proof_chars = secret.empty() ? 1 : 2 * sizeof(transport::Proof);
  if (head.size() + 2 * transport::kNonceBytes + 1 + proof_chars + 1 + body.size() > kMaxRequest)
    throw Error(Errc::kInvalidArgument,
                "rank " + std::to_string(p.rank) + "'s rendezvous request would be longer than the " +
                    std::to_string(kMaxRequest) + " bytes rank 0 reads: its launch id (" +
                    std::to_string(p.launch_id.size()) + " bytes, from RDMAPS_JOB_ID, SLURM_JOB_ID.SLURM_STEP_ID or " +
                    "TORCHELASTIC_RUN_ID) or its server address (" + std::to_string(address.size()) +
                    " bytes) is too long");
  // Each request a fresh nonce; both proofs cover it and the connection's challenge.
  auto request_with = [&](const transport::Nonce& host_nonce, const transport::Nonce& nonce) {
    return head + transport::to_hex(nonce) + " " + proof_of(secret, "rendezvous request", host_nonce, nonce, body) +
           " " + body;
  };
  // The connection's challenge, or the refusal of a rank 0 of another version.
  auto challenge_in = [&](const std::string& reply) {
    transport::Nonce host_nonce;
    if (reply.rfind("- challenge ", 0) == 0 && transport::from_hex(std::string_view(reply).substr(12), host_nonce))
      return host_nonce;
    if (reply.rfind("error ", 0) == 0)
      throw Error(Errc::kInvalidArgument, "the rendezvous at " + where + " refused rank " + std::to_string(p.rank) +
                                              ": " + answer_shown(std::string_view(reply).substr(6)));
    throw Error(Errc::kProtocol, "the rendezvous at " + where + " answered rank " + std::to_string(p.rank) +
                                     "'s challenge request with something else: '" + one_line(reply.substr(0, 80)) +
                                     "'");
  };
  // The answer's text once its proof holds (or both sides have no secret).
  auto proven_text = [&](const std::string& reply, const transport::Nonce& host_nonce,
                         const transport::Nonce& nonce) -> std::string {
    std::string_view rest = reply;
    const std::string_view proof = next_field(rest);
    // Said as rank 0 sent it where nothing proves it came from rank 0.
    const std::string unproven = secret.empty() ? "" : " (unproven: this answer proves no secret)";
    if (proof == "error") return answer_shown(reply) + unproven;  // before any proof: another version, not a request
    if (proof == "-" && secret.empty()) return rest.rfind("ok ", 0) == 0 ? std::string(rest) : answer_shown(rest);
    if (proof == "-" && rest.rfind("error ", 0) == 0) return answer_shown(rest) + unproven;  // our proof failed there
    if (proof == "-")
      throw Error(Errc::kInvalidArgument, "the rendezvous at " + where + " answered rank " + std::to_string(p.rank) +
                                              " without a secret, and this rank has one: give every rank the same "
                                              "RDMAPS_SECRET (or --secret-file), rank 0 included");
    if (secret.empty())
      throw Error(Errc::kInvalidArgument, "the rendezvous at " + where + " proves a secret, and rank " +
                                              std::to_string(p.rank) +
                                              " has none: give every rank the same RDMAPS_SECRET (or --secret-file)");
    if (!proves(secret, "rendezvous answer", host_nonce, nonce, rest, proof))
      throw Error(Errc::kInvalidArgument, "the answer from the rendezvous at " + where +
                                              " does not prove this rank's secret: is that rank 0 of this job, with "
                                              "the same RDMAPS_SECRET?");
    return rest.rfind("ok ", 0) == 0 ? std::string(rest) : answer_shown(rest);  // text another peer's request put there
  };

  transport::SockAddr addr;
  try {
    addr = transport::SockAddr::parse(where);
  } catch (const Error& e) {
    throw Error(Errc::kInvalidArgument,
                p.master_addr_var + "=" + p.master_addr +
                    " (rank 0's host, where the job's rendezvous is) does not resolve: " + e.what());
  }
  std::string last_error, last_answer;
  // Which came last: rank 0 answering, or failing to. Rank 0 that answered
  // and then stopped (it died) is what to report, not its last answer.
  bool error_after_answer = false;
  bool reached = false;      // something accepted the connection
  bool silent_last = false;  // the last failure was a wait for rank 0 that ran out (not a refused or reset connection)
  Clock::time_point answered_at{};
  // Every rank asks until the last one came: a world of thousands asks less often (rank 0 answers them all).
  const auto ask_every = std::chrono::milliseconds(std::min<int64_t>(1000, 100 + p.world_size / 5));
  // Answers come every ask_every while rank 0 runs: quieter than this, it stopped.
  const auto answers_within = std::max<std::chrono::milliseconds>(3 * ask_every, std::chrono::milliseconds(1500));
  // Past the timeout, only workers missing, none refused, rank 0 answering:
  // workers that reach their init late (a Python script importing torch and
  // loading data first, whose own timeout is 300 s) are waited for up to
  // kLateWorkers in all, as torchrun's join timeout waits. Servers answered
  // before every rank came used to wait for workers without end.
  const auto late_workers_only = [&] {
    // A proven refusal ends the wait; an unproven one may be any peer's, asking in a missing rank's name.
    if (last_answer.rfind("wait missing ", 0) != 0 || last_answer.find(" was refused by rank 0") != std::string::npos)
      return false;
    if (error_after_answer || Clock::now() - answered_at > answers_within) return false;
    return std::strtoull(last_answer.c_str() + 13, nullptr, 10) >= p.num_servers;  // the lowest missing rank
  };
  for (bool extended = false;; extended = true) {
    if (extended) {
      if (timeout >= kLateWorkers || !late_workers_only()) break;
      deadline = started + kLateWorkers;
      seconds = seconds_text(std::chrono::duration_cast<std::chrono::milliseconds>(kLateWorkers));
      log(LogLevel::kWarn, "rank " + std::to_string(p.rank) + ": the rendezvous at " + where +
                               " still lacks worker rank(s) " + last_answer.substr(13) + " after " +
                               seconds_text(timeout) + "; waiting for them up to " + seconds +
                               " in all (did they start? a worker that reaches its init late is waited for)");
    }
    while (Clock::now() < deadline) {
      try {
        TcpSocket s = TcpSocket::connect(addr, std::min(deadline, Clock::now() + std::chrono::seconds(5)));
        reached = true;
        s.send_message(bytes_of(head + "challenge"), deadline, where);
        std::vector<uint8_t> challenge;
        try {
          challenge = s.recv_message(deadline, where, kMaxRequest);
        } catch (const Error& e) {
          // Another program answering there (an HTTP server): the bare framing
          // error named neither the rendezvous nor the variables that chose it.
          if (e.code() != Errc::kProtocol) throw;
          throw Error(Errc::kProtocol, "rank " + std::to_string(p.rank) + ": something at " + where + " (" + from +
                                           ") is not rdmaps' rendezvous: " + e.what() + "; give the job another " +
                                           port_name(p));
        }
        const transport::Nonce host_nonce = challenge_in(std::string(challenge.begin(), challenge.end()));
        while (Clock::now() < deadline) {
          const auto nonce = transport::random_nonce();
          s.send_message(bytes_of(request_with(host_nonce, nonce)), deadline, where);
          auto reply = s.recv_message(deadline, where, 1 << 20);
          last_answer = proven_text(std::string(reply.begin(), reply.end()), host_nonce, nonce);
          error_after_answer = false;
          answered_at = Clock::now();
          if (last_answer.rfind("ok ", 0) == 0) {
            std::vector<std::string> servers;
            std::istringstream list(last_answer.substr(3));
            for (std::string item; std::getline(list, item, ',');) servers.push_back(item);
            if (servers.size() != p.num_servers)
              throw Error(Errc::kProtocol, "the rendezvous at " + where + " answered " +
                                               std::to_string(servers.size()) + " server addresses for " +
                                               std::to_string(p.num_servers) + " servers");
            return servers;
          }
          if (last_answer.rfind("error ", 0) == 0)
            throw Error(Errc::kInvalidArgument, "the rendezvous at " + where + " refused rank " +
                                                    std::to_string(p.rank) + ": " + last_answer.substr(6));
          std::this_thread::sleep_for(std::chrono::milliseconds(transport::cancellable_wait_ms(
              static_cast<int>(ask_every.count()), "waiting for the rendezvous", where)));
        }
      } catch (const Error& e) {
        // Cancelled (Ctrl-C in a Python rank, transport::CancelScope): now, not at the deadline.
        if (e.code() == Errc::kInvalidArgument || e.code() == Errc::kProtocol || e.code() == Errc::kCancelled) throw;
        last_error = e.what();  // rank 0 not up yet, or it restarted: ask again
        silent_last = e.code() == Errc::kTimeout;
        // (not an answer cut short by the deadline itself)
        if (e.code() != Errc::kTimeout || Clock::now() < deadline) error_after_answer = !last_answer.empty();
        // Cancellable too: a connect that fails at once (no route yet) never reaches a cancellable wait.
        for (const auto until = Clock::now() + std::chrono::milliseconds(200); Clock::now() < until;) {
          const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
          std::this_thread::sleep_for(std::chrono::milliseconds(
              transport::cancellable_wait_ms(static_cast<int>(left.count()), "waiting for the rendezvous", where)));
        }
      }
    }
    if (extended) break;
  }
  // "wait missing R,R-R" and then why rank 0 refused some of them, a line each.
  std::string missing, refusals;
  if (last_answer.rfind("wait missing ", 0) == 0) {
    const size_t end = std::min(last_answer.find('\n'), last_answer.size());
    missing = last_answer.substr(13, end - 13);
    for (size_t at = end; at < last_answer.size();) {
      const size_t next = std::min(last_answer.find('\n', at + 1), last_answer.size());
      refusals += (refusals.empty() ? " " : "; ") + last_answer.substr(at + 1, next - at - 1);
      at = next;
    }
  }
  // A stopped rank 0 (Ctrl-Z, SIGSTOP, a debugger) still has its connections
  // accepted by the kernel: what it last said is not why the ranks wait.
  // In milliseconds: in whole seconds, 1.9 s of quiet read as 1, short of answers_within's 1.5 s.
  const auto quiet = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - answered_at);
  const std::string stopped =
      " (is rank 0 stopped, by Ctrl-Z, SIGSTOP or a debugger, or overloaded? its host still "
      "accepts connections then)";
  // A wait that ran out on a rank 0 gone quiet is its being stopped, not its death: said as such, whether the
  // wait ended just before this rank's deadline or at it (under load it was taken for a death).
  const bool gone_quiet = !last_answer.empty() && quiet >= answers_within && (!error_after_answer || silent_last);
  if (error_after_answer && !gone_quiet)
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": rank 0, which hosts the rendezvous at " + where +
                                    " (" + from + "), stopped answering" +
                                    (missing.empty() ? "" : " while rank(s) " + missing + " were missing") +
                                    ", and did not answer again within " + seconds + ": " + last_error +
                                    " (did rank 0 exit? its own error says why)");
  if (gone_quiet)
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": rank 0, which hosts the rendezvous at " + where +
                                    " (" + from + "), answered last " + seconds_text(quiet) + " before this rank's " +
                                    seconds + " ran out" +
                                    (missing.empty() ? "" : ", when rank(s) " + missing + " were missing") + stopped);
  if (!missing.empty())
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": the rendezvous at " + where +
                                    " still lacks rank(s) " + missing + " (ranks below " +
                                    std::to_string(p.num_servers) + " serve) after " + seconds +
                                    ": did every rank start, with the same WORLD_SIZE and --servers?" + refusals);
  if (reached && last_answer.empty())
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": something at " + where + " (" + from +
                                    ") accepted the connection but never answered as rdmaps' "
                                    "rendezvous within " +
                                    seconds + ": " + last_error +
                                    " (another program on that port? then rank 0 could not host it and its own "
                                    "error says so; give the job another " +
                                    port_name(p) + ")" + stopped);
  // A rank 0 given a loopback MASTER_ADDR listens there alone (rendezvous.h):
  // a rank given the host's real address is refused.
  const bool refused = last_error.find("Connection refused") != std::string::npos;
  throw Error(Errc::kTimeout,
              "rank " + std::to_string(p.rank) + " could not reach the rendezvous at " + where + " (" + from +
                  "; rank 0 hosts it) within " + seconds + ": " + (last_error.empty() ? "no answer" : last_error) +
                  (refused && !addr.is_loopback() ? " (is rank 0 running, given this " + p.master_addr_var +
                                                        "? a rank 0 given a loopback one listens on loopback alone)"
                                                  : ""));
}

}  // namespace rdmaps::launch
