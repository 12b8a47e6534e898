#include "transport/bootstrap.h"

#include <algorithm>
#include <cstring>

#include "rdmaps/error.h"
#include "transport/cancel.h"
#include "transport/wire.h"

namespace rdmaps::transport::bootstrap {

namespace {
constexpr std::string_view kClientRole = "rdmaps bootstrap client";
constexpr std::string_view kServerRole = "rdmaps bootstrap server";
constexpr size_t kOpenBytes = 12 + kNonceBytes;
// What is read of an opening: a later version's may be longer, and read whole
// its version is named on both sides (at 44 bytes it was "over the limit").
constexpr size_t kMaxOpenBytes = 256;
constexpr size_t kMaxAnswer = 4 + sizeof(Proof) + kMaxAddress;

Error bad(const std::string& peer, const std::string& what) {
  return Error(Errc::kProtocol,
               "peer " + peer + " is not an rdmaps transport or speaks another version (" + what + ")");
}
std::vector<uint8_t> checked_address(std::span<const uint8_t> bytes, const std::string& peer) {
  if (bytes.empty() || bytes.size() > kMaxAddress)
    throw bad(peer, "a worker address of " + std::to_string(bytes.size()) + " bytes, expected 1 to " +
                        std::to_string(kMaxAddress));
  return {bytes.begin(), bytes.end()};
}
// The server never waits on a peer for long: its messages are small and the
// socket's buffer is empty when they go out, so this only bounds the odd case.
Deadline send_deadline(Deadline deadline) {
  return std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
}
}  // namespace

std::vector<uint8_t> encode(const Open& m) {
  WireWriter w;
  w.u32(kMagic);
  w.u32(kVersion);
  w.u32(m.flags);
  w.raw(m.nonce.data(), m.nonce.size());
  return w.take();
}

std::vector<uint8_t> encode(const Proven& m) {
  WireWriter w;
  w.raw(m.proof.data(), m.proof.size());
  w.raw(m.address.data(), m.address.size());
  return w.take();
}

std::vector<uint8_t> encode(const Answer& m) {
  WireWriter w;
  w.u32(m.ok ? 0 : 1);
  if (m.ok) {
    w.raw(m.proof.data(), m.proof.size());
    w.raw(m.address.data(), m.address.size());
  } else {
    w.u32(static_cast<uint32_t>(m.code));
    w.raw(m.reason.data(), std::min(m.reason.size(), kMaxReason));
  }
  return w.take();
}

Open parse_open(std::span<const uint8_t> bytes, const std::string& peer) {
  WireReader r(bytes, "opening from " + peer);
  if (bytes.size() < 8 || r.u32() != kMagic) throw bad(peer, "no rdmaps magic");
  if (const uint32_t version = r.u32(); version != kVersion)
    throw Error(Errc::kUnsupported, "peer " + peer + " speaks transport version " + std::to_string(version) +
                                        ", this side " + std::to_string(kVersion) + " (rebuild both from one release)");
  if (bytes.size() != kOpenBytes) throw bad(peer, "an opening of " + std::to_string(bytes.size()) + " bytes");
  Open m;
  m.flags = r.u32();
  if (m.flags & ~kHasSecret) throw bad(peer, "unknown flags " + std::to_string(m.flags));
  r.raw(m.nonce.data(), m.nonce.size());
  r.done();
  return m;
}

Proven parse_proven(std::span<const uint8_t> bytes, const std::string& peer) {
  WireReader r(bytes, "proof from " + peer);
  if (bytes.size() < sizeof(Proof)) throw bad(peer, "a proof of " + std::to_string(bytes.size()) + " bytes");
  Proven m;
  r.raw(m.proof.data(), m.proof.size());
  m.address = checked_address(r.rest(), peer);
  return m;
}

Answer parse_answer(std::span<const uint8_t> bytes, const std::string& peer) {
  WireReader r(bytes, "answer from " + peer);
  if (bytes.size() < 4) throw bad(peer, "an answer of " + std::to_string(bytes.size()) + " bytes");
  Answer m;
  const uint32_t status = r.u32();
  if (status > 1) throw bad(peer, "answer status " + std::to_string(status));
  m.ok = status == 0;
  if (!m.ok) {
    if (bytes.size() < 8) throw bad(peer, "a refusal without an error code");
    const uint32_t code = r.u32();
    if (code > static_cast<uint32_t>(Errc::kInternal)) throw bad(peer, "error code " + std::to_string(code));
    m.code = static_cast<Errc>(code);
    auto text = r.rest();
    m.reason.assign(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(std::min(text.size(), kMaxReason)));
    return m;
  }
  if (bytes.size() < 4 + sizeof(Proof)) throw bad(peer, "an answer of " + std::to_string(bytes.size()) + " bytes");
  r.raw(m.proof.data(), m.proof.size());
  m.address = checked_address(r.rest(), peer);
  return m;
}

Established client_handshake(const TcpSocket& socket, std::span<const uint8_t> my_address, std::string_view secret,
                             Deadline deadline, const std::string& peer, const QuietPeer& quiet) {
  const bool have = !secret.empty();
  Open mine;
  mine.flags = have ? kHasSecret : 0;
  mine.nonce = random_nonce();
  socket.send_message(encode(mine), deadline, peer);
  if (quiet.say && quiet.at < deadline) {
    for (;;) {
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(quiet.at - std::chrono::steady_clock::now());
      const int left = static_cast<int>(std::max<int64_t>(0, wait.count()));
      if (socket.readable(cancellable_wait_ms(left, "waiting for the handshake", peer))) break;
      if (left == 0) {
        quiet.say();
        break;
      }
    }
  }
  const Open theirs = parse_open(socket.recv_message(deadline, peer, kMaxOpenBytes), peer);
  const bool required = theirs.flags & kHasSecret;
  if (required && !have)
    throw Error(Errc::kPermissionDenied, "the server at " + peer +
                                             " requires a shared secret: set RDMAPS_SECRET or --secret-file to the "
                                             "server's (C++: Config::secret, which rdmaps::parse_config fills from "
                                             "them; see docs/security.md)");
  if (!required && have)
    throw Error(Errc::kPermissionDenied,
                "the server at " + peer +
                    " does not authenticate (it has no secret: started with --insecure, or listening on loopback "
                    "without one) while this side has a secret: refusing to trust it (unset the secret on both, or "
                    "set it on both)");
  Proven proven;
  if (have) proven.proof = prove(secret, kClientRole, mine.nonce, theirs.nonce, my_address, {});
  proven.address.assign(my_address.begin(), my_address.end());
  socket.send_message(encode(proven), deadline, peer);
  const Answer answer = parse_answer(socket.recv_message(deadline, peer, kMaxAnswer), peer);
  // A refusal is the server's word, whatever code it sends (unauthenticated):
  // taken as this side's timeout it lost the server's reason, and as a
  // dropped handshake (peer gone) it was tried again until the deadline.
  if (!answer.ok)
    throw Error(answer.code == Errc::kTimeout || answer.code == Errc::kPeerGone ? Errc::kProtocol : answer.code,
                "the server at " + peer + " refused the connection: " + answer.reason);
  if (have &&
      !same_proof(answer.proof, prove(secret, kServerRole, mine.nonce, theirs.nonce, answer.address, my_address)))
    throw Error(Errc::kPermissionDenied, "the server at " + peer +
                                             " could not prove the shared secret: it is not the server you meant, or "
                                             "its secret differs from this side's");
  Established out{answer.address, std::nullopt};
  if (have) out.seal.emplace(secret, mine.nonce, theirs.nonce, ControlSeal::Side::kClient);
  return out;
}

ServerHandshake::ServerHandshake(TcpSocket socket, std::string peer, std::string_view secret, Deadline deadline)
    : socket_(std::move(socket)), peer_(std::move(peer)), secret_(secret), deadline_(deadline) {}

bool ServerHandshake::advance() {
  if (stage_ == Stage::kReady) return true;
  if (!reader_.poll(socket_, peer_, stage_ == Stage::kOpen ? kMaxOpenBytes : sizeof(Proof) + kMaxAddress)) return false;
  if (stage_ == Stage::kOpen) {
    Open mine;
    mine.flags = secret_.empty() ? 0 : kHasSecret;
    mine.nonce = random_nonce();
    server_nonce_ = mine.nonce;
    // The opening always goes out, so the client can say clearly what is
    // missing, or which version this side speaks.
    const auto send_mine = [&] { socket_.send_message(encode(mine), send_deadline(deadline_), peer_); };
    Open theirs;
    try {
      theirs = parse_open(reader_.take(), peer_);
    } catch (const Error& e) {
      if (e.code() == Errc::kUnsupported) send_mine();
      throw;
    }
    client_nonce_ = theirs.nonce;
    send_mine();
    if (!secret_.empty() && !(theirs.flags & kHasSecret))
      throw Error(Errc::kPermissionDenied, "peer " + peer_ + " has no shared secret and this side requires one");
    stage_ = Stage::kProven;
    return advance();
  }
  Proven proven = parse_proven(reader_.take(), peer_);
  if (!secret_.empty() &&
      !same_proof(proven.proof, prove(secret_, kClientRole, client_nonce_, server_nonce_, proven.address, {}))) {
    refuse(Errc::kPermissionDenied, "wrong shared secret");
    throw Error(Errc::kPermissionDenied, "peer " + peer_ + " gave a wrong shared secret");
  }
  client_address_ = std::move(proven.address);
  stage_ = Stage::kReady;
  return true;
}

TcpSocket ServerHandshake::accept(std::span<const uint8_t> my_address) {
  if (stage_ != Stage::kReady) throw Error(Errc::kInternal, "accepting " + peer_ + " before its handshake completed");
  Answer answer;
  answer.ok = true;
  if (!secret_.empty())
    answer.proof = prove(secret_, kServerRole, client_nonce_, server_nonce_, my_address, client_address_);
  answer.address.assign(my_address.begin(), my_address.end());
  socket_.send_message(encode(answer), send_deadline(deadline_), peer_);
  return std::move(socket_);
}

std::optional<ControlSeal> ServerHandshake::seal() const {
  if (secret_.empty()) return std::nullopt;
  return ControlSeal(secret_, client_nonce_, server_nonce_, ControlSeal::Side::kServer);
}

void ServerHandshake::refuse(Errc code, const std::string& reason) {
  Answer answer;
  answer.code = code;
  answer.reason = reason;
  try {
    socket_.send_message(encode(answer), send_deadline(deadline_), peer_);
  } catch (const Error&) {
  }
}

}  // namespace rdmaps::transport::bootstrap
