#include "src/train/run_outputs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "rdmaps/error.h"
#include "transport/memory_limit.h"

namespace rdmaps::train {
namespace {

// Keys are the staleness as text, in increasing order, the servers' last
// bucket as ">=N"; taus never seen are left out.
nlohmann::ordered_json json_histogram(const Histogram& h) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (size_t tau = 0; tau < h.exact.size(); ++tau)
    if (h.exact[tau]) out[std::to_string(tau)] = h.exact[tau];
  if (h.beyond) out[">=" + std::to_string(h.from)] = h.beyond;
  return out;
}

// A number where it is one, else the text (">=4096").
nlohmann::ordered_json json_number_or_text(const std::string& v) {
  if (v.rfind(">=", 0) == 0) return v;
  return std::stod(v);
}

nlohmann::ordered_json json_value(const RunResult& r) {
  nlohmann::ordered_json j = {{"run", r.label},
                              {"final_test_accuracy", r.final_accuracy},
                              {"seconds", r.seconds},
                              {"time_to_85_s", r.time_to_85 ? nlohmann::ordered_json(*r.time_to_85) : nullptr},
                              {"steps", r.steps},
                              {"updates", r.updates},
                              {"updates_dropped", r.dropped},
                              {"bytes_pushed", r.pushed},
                              {"bytes_pulled", r.pulled},
                              {"pulls", r.pulls},
                              {"pulls_skipped", r.skipped},
                              {"staleness_p50", json_number_or_text(r.tau_p50)},
                              {"staleness_max", r.tau_max},
                              {"straggled_steps", r.straggled},
                              {"server_restarts_seen", r.reconnects},
                              {"pushes_lost", r.pushes_lost},
                              {"staleness_histogram", json_histogram(r.staleness)},
                              {"virtual_workers", r.virtual_workers}};
  nlohmann::ordered_json resumed = nlohmann::ordered_json::array();
  for (const auto& s : r.servers) resumed.push_back(s.resumed);
  j["resumed_pieces"] = resumed;
  if (!r.failure.empty()) j["failure"] = r.failure;
  if (r.virtual_workers) {
    j["delay"] = r.delay;
    j["schedule_staleness_histogram"] = json_histogram(r.schedule_staleness);
    j["virtual_time"] = r.virtual_time;
    j["virtual_time_to_85"] = r.virtual_time_to_85 ? nlohmann::ordered_json(*r.virtual_time_to_85) : nullptr;
  }
  return j;
}

// Writes one output file; an unwritable --out is an error naming the path
// and the system's reason, never a "wrote" line over nothing.
void write_file(const std::string& path, const std::string& text) {
  errno = 0;
  std::ofstream f(path, std::ios::binary);
  if (f) f << text;
  if (f) f.flush();
  if (!f)
    throw Error(Errc::kIo, "cannot write " + path + ": " + (errno ? std::strerror(errno) : "write failed") +
                               " (choose another --out)");
  f.close();
  if (!f) throw Error(Errc::kIo, "cannot write " + path + ": closing it failed (disk full?)");
}

void make_out_dir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error(Errc::kIo, "cannot create the output directory '" + dir + "' (--out): " + std::strerror(errno));
}

// `v` between `quote`s, each quote inside written as `escaped`.
std::string enclosed(const std::string& v, char quote, const char* escaped) {
  std::string out(1, quote);
  for (char c : v) out += c == quote ? std::string(escaped) : std::string(1, c);
  return out + quote;
}

// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& v) {
  return v.find_first_of(",\"\r\n") == std::string::npos ? v : enclosed(v, '"', "\"\"");
}

// Double quotes with backslash escapes: inside single quotes gnuplot 5.4 misreads
// two quotes in a row (the label a''b was a syntax error), and a line break ends a command.
std::string gnuplot_quoted(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n' || c == '\r')
      out += c == '\n' ? "\\n" : "\\r";
    else
      out += c;
  }
  return out + '"';
}

std::string shell_quoted(const std::string& v) { return enclosed(v, '\'', "'\\''"); }

}  // namespace

// One run: its object; --compare: an array of them, however many finished.
std::string json_of(const std::vector<RunResult>& runs, bool compare) {
  if (!compare) return json_value(runs.at(0)).dump();
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& r : runs) all.push_back(json_value(r));
  return all.dump();
}

void check_writable(const std::string& dir) {
  make_out_dir(dir);
  const std::string probe = dir + "/.rdmaps-write-test";
  write_file(probe, "rdmaps\n");
  std::remove(probe.c_str());
}

// An earlier run's outputs go before this one trains: a run that failed left
// them looking like its own, and one that could write some but not all left
// two runs' files side by side. One that cannot go is named, before training.
void clear_earlier_outputs(const std::string& dir) {
  std::vector<std::string> names = {"metrics.csv", "summary.json", "accuracy.gp", "accuracy.png", "gnuplot.err"};
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("curve-") && name.ends_with(".csv")) names.push_back(name);
  }
  for (const auto& name : names) {
    const std::string path = dir + "/" + name;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      throw Error(Errc::kIo,
                  "cannot remove the earlier run's " + path + ": " + std::strerror(errno) + " (choose another --out)");
  }
}

void write_outputs(const std::string& dir, const std::vector<RunResult>& runs, bool json, bool compare) {
  make_out_dir(dir);
  std::ostringstream csv;
  // worker0_steps: the evaluating worker's own steps at its snapshot, not the
  // job's updates (about workers times as many); docs/observability.md.
  csv << "run,seconds,epoch,test_accuracy,test_loss,worker0_steps\n";
  for (const auto& r : runs)
    for (const auto& p : r.curve) {
      csv.precision(6);
      csv << csv_field(r.label) << "," << p.seconds << "," << p.epoch << "," << p.accuracy << ",";
      csv.precision(17);  // as the worker measured it: deterministic runs compare bit for bit
      csv << p.loss << "," << p.updates << "\n";
    }
  write_file(dir + "/metrics.csv", csv.str());
  const std::string summary = json_of(runs, compare) + "\n";
  write_file(dir + "/summary.json", summary);
  // Plot with gnuplot when it is there; the CSV is the result either way.
  const std::string script = dir + "/accuracy.gp";
  // Virtual workers share this machine's cores in turns: their schedule's clock is the one to plot against.
  const bool scheduled =
      std::all_of(runs.begin(), runs.end(), [](const RunResult& r) { return r.virtual_workers > 0; });
  // 0.5 to 0.95, where the runs differ, widened to show each run's best
  // accuracy: a fixed range left a run that did not learn (BSP with 8
  // workers at lr 0.1 ends at 10-46 %) out of the plot, its key still shown,
  // and cut MNIST's 98 %.
  double bottom = 0.5, top = 0.95;
  for (const auto& r : runs) {
    if (r.curve.empty()) continue;
    double best = 0;
    for (const auto& p : r.curve) best = std::max(best, p.accuracy);
    bottom = std::min(bottom, std::floor(best * 10) / 10);
    top = std::max(top, std::min(1.0, std::ceil(best * 20) / 20));
  }
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,560\nset output " << gnuplot_quoted(dir + "/accuracy.png")
     << "\nset datafile separator ','\n"
     << "set key bottom right\nset grid\nset xlabel "
     << (scheduled ? "'step times (the virtual schedule)'" : "'wall-clock seconds'")
     << "\nset ylabel 'test accuracy'\nset yrange [" << bottom << ":" << top << "]\n"
     << "set title 'rdmaps-train: Fashion-MNIST MLP'\nplot ";
  for (size_t i = 0; i < runs.size(); ++i) {
    std::string file = dir + "/curve-" + std::to_string(i) + ".csv";
    std::ostringstream c;
    for (const auto& p : runs[i].curve) c << (scheduled ? p.virtual_time : p.seconds) << "," << p.accuracy << "\n";
    write_file(file, c.str());
    gp << (i ? ", " : "") << gnuplot_quoted(file) << " using 1:2 with linespoints title "
       << gnuplot_quoted(runs[i].label) << " noenhanced";  // a label's _ and ^ are not sub- and superscripts
  }
  gp << "\n";
  write_file(script, gp.str());
  std::string plot;
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    plot = " (no plot: gnuplot is not installed; apt-get install gnuplot-nox)";
  else if (std::system(("env -u RDMAPS_SECRET gnuplot " + shell_quoted(script) + " 2>" +  // it needs no secret
                        shell_quoted(dir + "/gnuplot.err"))
                           .c_str()) != 0) {
    std::remove((dir + "/accuracy.png").c_str());  // gnuplot leaves an empty frame where its plot failed
    plot = " (no plot: gnuplot failed, see " + dir + "/gnuplot.err)";
  } else
    plot = ", " + dir + "/accuracy.png";
  if (!json) std::printf("wrote %s/metrics.csv, %s/summary.json%s\n", dir.c_str(), dir.c_str(), plot.c_str());
}

void print_table(const std::vector<RunResult>& runs) {
  std::printf("%-22s %10s %12s %9s %9s %12s %10s %10s\n", "run", "final acc", "time to 85%", "updates", "dropped",
              "bytes moved", "staleness", "seconds");
  for (const auto& r : runs) {
    char t85[32];
    if (r.virtual_workers && r.virtual_time_to_85)  // the schedule's clock, not this machine's
      std::snprintf(t85, sizeof(t85), "%.0f steps", *r.virtual_time_to_85);
    else if (r.time_to_85)
      std::snprintf(t85, sizeof(t85), "%.1f s", *r.time_to_85);
    else
      std::snprintf(t85, sizeof(t85), "never");
    std::printf("%-22s %9.2f%% %12s %9llu %9llu %12s %10s %10.1f\n", r.label.c_str(), 100 * r.final_accuracy, t85,
                static_cast<unsigned long long>(r.updates), static_cast<unsigned long long>(r.dropped),
                transport::size_text(r.pushed + r.pulled, 2).c_str(), r.tau_p50.c_str(), r.seconds);
  }
}

}  // namespace rdmaps::train
