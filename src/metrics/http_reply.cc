#include "src/metrics/http_reply.h"

#include <algorithm>
#include <charconv>
#include <exception>
#include <string>
#include <vector>

#include "src/metrics/exposition.h"

namespace rdmaps::metrics {

namespace {

constexpr std::string_view kText = "text/plain; charset=utf-8";

std::string reply(int status, std::string_view reason, std::string_view type, std::string_view body, bool send_body,
                  std::string_view extra_headers = {}) {
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
  r += "Content-Type: " + std::string(type) + "\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r += extra_headers;
  r += "Connection: close\r\n\r\n";
  if (send_body) r += body;
  return r;
}

std::string text(int status, std::string_view reason, const std::string& message, bool send_body = true,
                 std::string_view extra_headers = {}) {
  return reply(status, reason, kText, "rdmaps: " + message + "\n", send_body, extra_headers);
}

// A request's bytes echoed in a reply: control bytes and non-ASCII shown as
// '?', long ones cut.
std::string printable(std::string_view s) {
  constexpr size_t kMax = 200;
  std::string out;
  for (char c : s.substr(0, kMax)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > kMax) out += "...";
  return out;
}

bool same_letters(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos))
      return false;
  return true;
}

std::vector<std::string_view> lines_of(std::string_view head) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    const size_t end = head.find('\n');
    std::string_view line = head.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (end == std::string_view::npos) break;
    head.remove_prefix(end + 1);
  }
  return lines;
}

// The path of an origin-form ("/metrics?x") or absolute-form
// ("http://host/metrics") request target; empty where it is neither.
std::string_view path_of(std::string_view target) {
  if (const size_t scheme = target.find("://"); scheme != std::string_view::npos && target[0] != '/') {
    const size_t slash = target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? "/" : target.substr(slash);
  }
  if (target.empty() || target[0] != '/') return {};
  return target.substr(0, target.find_first_of("?#"));
}

}  // namespace

// Whether `head` (from its request line on) asks with HEAD, which gets no body, valid or not.
static bool asks_head(std::string_view head) { return head.substr(0, head.find_first_of(" \t\r\n")) == "HEAD"; }

std::string reply_to(std::string_view head, const std::function<std::string()>& render) {
  std::vector<std::string_view> lines = lines_of(head);
  // Empty lines before the request line are ignored (RFC 9112 section 2.2).
  const auto first = std::find_if(lines.begin(), lines.end(), [](std::string_view l) { return !l.empty(); });
  lines.erase(lines.begin(), first);
  const std::string_view request = lines.empty() ? std::string_view() : lines[0];
  // HEAD gets no body, whatever the status: a malformed request line's 400 had one.
  const bool send_body = !asks_head(request);
  const size_t sp1 = request.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : request.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || request.find(' ', sp2 + 1) != std::string_view::npos)
    return text(400, "Bad Request", "'" + printable(request) + "' is not an HTTP request line", send_body);
  const std::string_view method = request.substr(0, sp1), target = request.substr(sp1 + 1, sp2 - sp1 - 1),
                         version = request.substr(sp2 + 1);
  if (!is_token(method) || target.empty())
    return text(400, "Bad Request", "'" + printable(request) + "' is not an HTTP request line", send_body);
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  const bool http = version.size() == 8 && version.substr(0, 5) == "HTTP/" && digit(version[5]) && version[6] == '.' &&
                    digit(version[7]);
  if (!http) return text(400, "Bad Request", "'" + printable(version) + "' is not an HTTP version", send_body);
  // A later 1.x minor is answered as 1.1 (RFC 9112 section 2.3); HEAD gets no body, whatever the status.
  if (version[5] != '1')
    return text(505, "HTTP Version Not Supported", printable(version) + ": this endpoint speaks HTTP/1.1", send_body);
  bool has_length = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
      return text(400, "Bad Request", "header line '" + printable(line) + "' is not 'Name: value'", send_body);
    const std::string_view name = line.substr(0, colon), value = trimmed(line.substr(colon + 1));
    if (same_letters(name, "transfer-encoding"))
      return text(413, "Content Too Large", "request bodies are not read (this one's length is not given)", send_body);
    if (same_letters(name, "content-length")) {
      uint64_t length = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (has_length || ec != std::errc() || end != value.data() + value.size())
        return text(400, "Bad Request", "Content-Length '" + printable(value) + "' is not one number", send_body);
      has_length = true;
      if (length > kMaxRequestBody)
        return text(413, "Content Too Large",
                    "request bodies are not read (" + std::to_string(length) + " bytes; at most " +
                        std::to_string(kMaxRequestBody) + ")",
                    send_body);
    }
  }
  const std::string_view path = path_of(target);
  if (path != "/metrics")
    return text(404, "Not Found", "no such path " + printable(target) + "; metrics are at /metrics", send_body);
  if (method != "GET" && method != "HEAD")
    return text(405, "Method Not Allowed", printable(method) + " /metrics: metrics are read with GET", send_body,
                "Allow: GET, HEAD\r\n");
  std::string page;
  try {
    page = render();
  } catch (const std::exception& e) {
    return text(500, "Internal Server Error", std::string("metrics unavailable: ") + e.what(), send_body);
  }
  return reply(200, "OK", kContentType, page, send_body);
}

std::string reply_to_oversized_head(std::string_view head) {
  return text(431, "Request Header Fields Too Large",
              "the request line and headers are longer than " + std::to_string(kMaxRequestHead) + " bytes",
              !asks_head(head.substr(std::min(head.find_first_not_of("\r\n"), head.size()))));
}

}  // namespace rdmaps::metrics
