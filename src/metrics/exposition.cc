#include "src/metrics/exposition.h"

#include <charconv>
#include <cmath>

namespace rdmaps::metrics {

std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

namespace {
// HELP text escapes backslash and newline only (the format's rule).
std::string escape_help(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}
}  // namespace

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // to_chars ignores the process locale: printf under LC_NUMERIC=de_DE wrote
  // 0,5, and Prometheus refused the whole scrape (a trainer's setlocale).
  char buf[64];
  std::to_chars_result end{};
  // Counters are integers: print them exactly (up to 2^53) rather than as 1.2e+07.
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0)
    end = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::fixed);
  else
    end = std::to_chars(buf, buf + sizeof(buf), value);  // the shortest form that reads back as the same double
  return std::string(buf, end.ptr);
}

void Exposition::header(const std::string& name, const std::string& help, const char* type) {
  out_ += "# HELP " + name + " " + escape_help(help) + "\n# TYPE " + name + " " + type + "\n";
}

void Exposition::line(const std::string& name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ',';
      out_ += labels[i].first + "=\"" + escape_label_value(labels[i].second) + '"';
    }
    out_ += '}';
  }
  out_ += ' ' + format_value(value) + '\n';
}

void Exposition::family(const std::string& name, const std::string& help, const char* type,
                        const std::vector<Sample>& samples) {
  header(name, help, type);
  for (const auto& s : samples) line(name, s.labels, s.value);
}

void Exposition::counter(const std::string& name, const std::string& help, double value) {
  family(name, help, "counter", {{{}, value}});
}

void Exposition::gauge(const std::string& name, const std::string& help, double value) {
  family(name, help, "gauge", {{{}, value}});
}

void Exposition::histogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                           const std::vector<uint64_t>& counts, double sum) {
  header(name, help, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (i < counts.size()) cumulative += counts[i];
    line(name + "_bucket", {{"le", format_value(bounds[i])}}, static_cast<double>(cumulative));
  }
  for (size_t i = bounds.size(); i < counts.size(); ++i) cumulative += counts[i];
  line(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(cumulative));
  line(name + "_sum", {}, sum);
  line(name + "_count", {}, static_cast<double>(cumulative));
}

}  // namespace rdmaps::metrics
