#include "transport/address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cctype>
#include <charconv>
#include <cstring>

#include "rdmaps/error.h"

namespace rdmaps::transport {

bool names_address(std::string_view text, std::string_view host_port) {
  if (host_port.empty()) return false;
  for (size_t at = text.find(host_port); at != std::string_view::npos; at = text.find(host_port, at + 1)) {
    const size_t end = at + host_port.size();
    if (end == text.size() || !std::isdigit(static_cast<unsigned char>(text[end]))) return true;
  }
  return false;
}

std::string host_of(std::string_view host_port) {
  std::string_view host = host_port.substr(0, host_port.rfind(':'));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return std::string(host);
}

std::string join_host_port(const std::string& host, uint16_t port) {
  const bool v6_literal = host.find(':') != std::string::npos && host.front() != '[';
  return (v6_literal ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

HostPort split_host_port(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    throw Error(Errc::kInvalidArgument, "address '" + std::string(text) + "' has no port: expected host:port");
  std::string host(text.substr(0, colon));
  std::string_view port_text = text.substr(colon + 1);
  // An IPv6 host holds colons itself: only [HOST]:PORT says where the port is
  // ("::1:5000" was taken as [::1]:5000, "[::1]" as port "1]").
  const bool bracketed = !text.empty() && text.front() == '[';
  if (bracketed ? host.size() < 2 || host.back() != ']' : host.find(':') != std::string::npos)
    throw Error(Errc::kInvalidArgument, "address '" + std::string(text) +
                                            "': an IPv6 host goes in brackets with the port after them, "
                                            "[HOST]:PORT (e.g. [::1]:5000)");
  if (bracketed) host = host.substr(1, host.size() - 2);
  // "[]:5000" listened on every interface, as ":5000" does: one spelling for that.
  if (bracketed && host.empty())
    throw Error(Errc::kInvalidArgument, "address '" + std::string(text) +
                                            "': the brackets hold no host (give one, or :PORT alone for every "
                                            "interface)");
  // "a:1, b:2" split at the comma: the blank would reach the resolver.
  if (host.find_first_of(" \t\r\n") != std::string::npos)
    throw Error(Errc::kInvalidArgument, "address '" + std::string(text) + "': the host holds a blank");
  int port = -1;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  // Digits alone: from_chars takes a sign, and "-0" listened on a port of the system's choosing.
  if (port_text.find_first_not_of("0123456789") != std::string_view::npos || ec != std::errc() ||
      end != port_text.data() + port_text.size() || port > 65535)
    throw Error(Errc::kInvalidArgument, "address '" + std::string(text) + "': port '" + std::string(port_text) +
                                            "' is not a number in 0..65535");
  return {std::move(host), static_cast<uint16_t>(port)};
}

SockAddr SockAddr::parse(std::string_view text) {
  const auto [host, port] = split_host_port(text);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (host.empty() ? AI_PASSIVE : 0);
  addrinfo* result = nullptr;
  std::string port_str = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port_str.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr)
    throw Error(Errc::kInvalidArgument,
                "address '" + std::string(text) + "': cannot resolve '" + host + "': " + gai_strerror(rc));
  // Prefer IPv4 for the wildcard: UCX's tcp listener on "::" is not dual-stack everywhere.
  addrinfo* pick = result;
  for (addrinfo* ai = result; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET) {
      pick = ai;
      break;
    }
  SockAddr out = from(pick->ai_addr, pick->ai_addrlen);
  freeaddrinfo(result);
  return out;
}

SockAddr SockAddr::from(const sockaddr* addr, socklen_t length) {
  SockAddr out;
  if (length > sizeof(out.storage_))
    throw Error(Errc::kInvalidArgument, "socket address of " + std::to_string(length) + " bytes is too long");
  std::memcpy(&out.storage_, addr, length);
  out.length_ = length;
  return out;
}

int SockAddr::port() const {
  if (storage_.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (storage_.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return -1;
}

SockAddr SockAddr::with_port(uint16_t port) const {
  SockAddr out = *this;
  if (storage_.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&out.storage_)->sin_port = htons(port);
  if (storage_.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&out.storage_)->sin6_port = htons(port);
  return out;
}

std::string SockAddr::to_string() const {
  char host[INET6_ADDRSTRLEN] = "?";
  if (storage_.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(port());
  }
  if (storage_.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(port());
  }
  return "<no address>";
}

bool SockAddr::is_loopback() const {
  if (storage_.ss_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr) >> 24) == 127;
  if (storage_.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  return false;
}

bool SockAddr::is_any() const {
  if (storage_.ss_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (storage_.ss_family == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
  return false;
}

}  // namespace rdmaps::transport
