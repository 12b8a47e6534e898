#include "src/launch/server_list.h"

#include "rdmaps/error.h"

namespace rdmaps::launch {
namespace {

[[noreturn]] void fail(const std::string& why) { throw Error(Errc::kInvalidArgument, why); }

// `text`: the list as typed, named in an empty entry's error; null for entries given one by one.
void check(const std::vector<std::string>& items, const std::string& source, const std::string* text) {
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& s = items[i];
    const std::string entry = source + " entry " + std::to_string(i + 1) + " '" + s + "'";
    if (s.empty())
      fail((text ? source + "='" + *text + "': entry " : source + " entry ") + std::to_string(i + 1) +
           " is empty (the list is host:port,host:port, one entry per server)");
    if (!text && s.find(',') != std::string::npos) fail(entry + " holds a comma: one host:port per entry");
    if (s.find_first_of(" \t\r\n") != std::string::npos)
      fail(entry + " has white space (the list is host:port,host:port without spaces)");
    const size_t colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == s.size() ||
        s.find_first_not_of("0123456789", colon + 1) != std::string::npos)
      fail(entry + " is not host:port");
    const std::string host = s.substr(0, colon);
    const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
    if (bracketed ? host.size() == 2 : host.find_first_of(":[]") != std::string::npos)
      fail(entry + " is not host:port (an IPv6 address goes in brackets: [::1]:13337)");
    const std::string port = s.substr(colon + 1);
    if (port.size() > 1 && port[0] == '0' && port.find_first_not_of('0') != std::string::npos)
      fail(entry + " has port " + port + " with a leading zero: give it as " +
           port.substr(port.find_first_not_of('0')) + " (one server, one spelling)");
    if (port.find_first_not_of('0') == std::string::npos)
      fail(entry + " has port 0: server " + std::to_string(i) +
           " would listen on a port of the system's choosing that the workers cannot know; give every server "
           "its port");
    if (port.size() > 5 || std::stoul(port) > 65535) fail(entry + " has port " + port + ", above 65535");
    for (size_t j = 0; j < i; ++j)
      if (items[j] == s)
        fail(source + ": '" + s + "' is listed twice (entries " + std::to_string(j + 1) + " and " +
             std::to_string(i + 1) + "): every server needs an address of its own");
  }
}

}  // namespace

std::vector<std::string> server_list(const std::string& text, const std::string& source) {
  std::vector<std::string> items;
  for (size_t start = 0;;) {
    const size_t comma = text.find(',', start);
    items.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  check(items, source, &text);
  return items;
}

void check_server_list(const std::vector<std::string>& entries, const std::string& source) {
  check(entries, source, nullptr);
}

}  // namespace rdmaps::launch
