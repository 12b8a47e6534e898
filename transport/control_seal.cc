#include "transport/control_seal.h"

#include "rdmaps/error.h"

namespace rdmaps::transport {
namespace {

constexpr std::string_view kKeyLabel = "rdmaps control key";
constexpr std::string_view kClientSends = "rdmaps control client";
constexpr std::string_view kServerSends = "rdmaps control server";

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

}  // namespace

ControlSeal::ControlSeal(std::string_view secret, const Nonce& client, const Nonce& server, Side side)
    : key_(mac(secret, {bytes_of(kKeyLabel), client, server})),
      mine_(side == Side::kClient ? kClientSends : kServerSends),
      theirs_(side == Side::kClient ? kServerSends : kClientSends) {}

Proof ControlSeal::tag(std::string_view role, uint64_t number, std::span<const uint8_t> message) const {
  uint8_t counted[8];
  for (int i = 0; i < 8; ++i) counted[i] = static_cast<uint8_t>(number >> (8 * i));
  return mac(std::string_view(reinterpret_cast<const char*>(key_.data()), key_.size()),
             {bytes_of(role), counted, message});
}

std::vector<uint8_t> ControlSeal::seal(std::span<const uint8_t> message) {
  std::vector<uint8_t> sealed(message.begin(), message.end());
  const Proof t = tag(mine_, sent_++, message);
  sealed.insert(sealed.end(), t.begin(), t.end());
  return sealed;
}

std::vector<uint8_t> ControlSeal::open(std::vector<uint8_t> sealed, const std::string& peer) {
  Proof got{};
  const bool long_enough = sealed.size() >= kTagBytes;
  if (long_enough) {
    std::copy(sealed.end() - kTagBytes, sealed.end(), got.begin());
    sealed.resize(sealed.size() - kTagBytes);
  }
  if (!long_enough || !same_proof(got, tag(theirs_, received_, sealed)))
    throw Error(Errc::kPermissionDenied,
                "control message " + std::to_string(received_ + 1) + " from " + peer +
                    " fails its seal: it was changed, inserted or replayed on the way (something between the two "
                    "sides relays this connection), or the peer is not the one that proved the secret");
  ++received_;
  return sealed;
}

}  // namespace rdmaps::transport
