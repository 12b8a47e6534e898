// The Prometheus text exposition format (version 0.0.4): what a scrape of
// /metrics returns. Families are written whole, HELP and TYPE first, so a
// caller cannot interleave one family's samples with another's.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rdmaps::metrics {

/// The Content-Type a scraper expects for this format.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  struct Sample {
    Labels labels;
    double value = 0;
  };
  /// A counter or gauge family: `type` is "counter" or "gauge". Counter names end in _total.
  void family(const std::string& name, const std::string& help, const char* type, const std::vector<Sample>& samples);
  /// One sample without labels.
  void counter(const std::string& name, const std::string& help, double value);
  void gauge(const std::string& name, const std::string& help, double value);
  /// A histogram from per-bucket (not cumulative) counts: counts[i] holds the
  /// observations in (bounds[i-1], bounds[i]]; a last extra count, if given,
  /// those above every bound. Writes cumulative _bucket lines, +Inf, _sum, _count.
  void histogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                 const std::vector<uint64_t>& counts, double sum);
  const std::string& text() const { return out_; }

 private:
  void header(const std::string& name, const std::string& help, const char* type);
  void line(const std::string& name, const Labels& labels, double value);
  std::string out_;
};

/// A label value with backslash, double quote and newline escaped.
std::string escape_label_value(const std::string& value);
/// A number as the format writes it: integers without exponent, +Inf, -Inf, NaN.
std::string format_value(double value);

}  // namespace rdmaps::metrics
