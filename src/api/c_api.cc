// The C ABI (include/rdmaps/rdmaps.h) over the C++ API: every exception
// becomes a status code plus a per-thread message.
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "rdmaps/rdmaps.h"
#include "rdmaps/server.h"
#include "src/api/cli.h"
#include "src/api/log_sink.h"
#include "src/api/unsaved_model.h"
#include "src/launch/server_list.h"
#include "transport/process_id.h"

struct rdmaps_client {
  std::unique_ptr<rdmaps::Client> client;
};
struct rdmaps_server {
  std::unique_ptr<rdmaps::Server> server;
  // rdmaps_server_run still reads the server after run() returned: destroy
  // on another thread waits for that, not only for run() (~Server does that).
  std::mutex mu;
  std::condition_variable idle;
  int running = 0;
  bool destroy_on_return = false;  // destroyed from a log callback while it ran: the last run's end frees it
  // A forked child's copy: its run is the parent's thread's, never to end there.
  const pid_t owner = rdmaps::transport::this_process_id();
};

namespace {

thread_local std::string g_last_error;

rdmaps_status status_of(rdmaps::Errc code) {
  switch (code) {
    case rdmaps::Errc::kInvalidArgument:
      return RDMAPS_ERR_INVALID_ARGUMENT;
    case rdmaps::Errc::kPermissionDenied:
      return RDMAPS_ERR_PERMISSION_DENIED;
    case rdmaps::Errc::kOutOfBounds:
      return RDMAPS_ERR_OUT_OF_BOUNDS;
    case rdmaps::Errc::kTimeout:
      return RDMAPS_ERR_TIMEOUT;
    case rdmaps::Errc::kUnreachable:
      return RDMAPS_ERR_UNREACHABLE;
    case rdmaps::Errc::kPeerGone:
      return RDMAPS_ERR_PEER_GONE;
    case rdmaps::Errc::kProtocol:
      return RDMAPS_ERR_PROTOCOL;
    case rdmaps::Errc::kNoMemory:
      return RDMAPS_ERR_NO_MEMORY;
    case rdmaps::Errc::kUnsupported:
      return RDMAPS_ERR_UNSUPPORTED;
    case rdmaps::Errc::kIo:
      return RDMAPS_ERR_IO;
    case rdmaps::Errc::kInternal:
      return RDMAPS_ERR_INTERNAL;
    case rdmaps::Errc::kCancelled:
      return RDMAPS_ERR_CANCELLED;
    case rdmaps::Errc::kRefusedForNow:
      return RDMAPS_ERR_REFUSED_FOR_NOW;
  }
  return RDMAPS_ERR_INTERNAL;
}

// The thread's last error; where even that string cannot be made (out of
// memory), an empty one: nothing may escape into a C caller.
void set_last_error(const char* function, const char* what) noexcept {
  try {
    g_last_error = std::string(function) + ": " + what;
  } catch (...) {
    g_last_error.clear();
  }
}

// Runs f; turns what it throws into a status and the thread's last error.
template <typename F>
rdmaps_status guarded(const char* function, F&& f) noexcept {
  try {
    f();
    return RDMAPS_OK;
  } catch (const rdmaps::Error& e) {
    set_last_error(function, e.what());
    return status_of(e.code());
  } catch (const std::bad_alloc&) {
    set_last_error(function, "out of memory");
    return RDMAPS_ERR_NO_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(function, e.what());
    return RDMAPS_ERR_INTERNAL;
  } catch (...) {
    set_last_error(function, "an unknown exception");
    return RDMAPS_ERR_INTERNAL;
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, what);
}
void require(bool ok, const std::string& what) { require(ok, what.c_str()); }
// Names the first argument that is NULL ("gradient is NULL"), not a list of candidates.
void require_given(std::initializer_list<std::pair<const char*, const void*>> arguments) {
  for (const auto& [name, pointer] : arguments)
    if (!pointer) throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, std::string(name) + " is NULL");
}

// `text` NUL-terminated into buf, or an error naming the size it needs (and
// buf empty: a caller that reads it anyway reads no stale text).
void copy_out(const std::string& text, const char* what, char* buf, size_t size) {
  if (size > 0) buf[0] = '\0';
  require(size > text.size(), "a buffer of " + std::to_string(size) + " bytes is too small for the " + what + " " +
                                  text + " (" + std::to_string(text.size() + 1) + " bytes with its NUL)");
  std::memcpy(buf, text.c_str(), text.size() + 1);
}

// The words of a config string, split at blanks as a shell would: in single
// quotes every character is taken as it is; in double quotes a backslash
// takes a following " or \ as it is; unquoted, it takes any next character
// ("--checkpoint-dir '/data/my run'").
std::vector<std::string> config_words(const std::string& text) {
  auto bad = [](const std::string& why) { return rdmaps::Error(rdmaps::Errc::kInvalidArgument, "config: " + why); };
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;  // ' or " while inside quotes
  size_t opened = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quote == '\'') {
      if (ch == '\'')
        quote = 0;
      else
        word.push_back(ch);
      continue;
    }
    if (ch == '\\' && (quote == 0 || (i + 1 < text.size() && (text[i + 1] == '"' || text[i + 1] == '\\')))) {
      if (++i == text.size()) throw bad("it ends in a '\\' that escapes nothing");
      word.push_back(text[i]);
      in_word = true;
    } else if (quote == '"') {
      if (ch == '"')
        quote = 0;
      else
        word.push_back(ch);
    } else if (ch == '\'' || ch == '"') {
      quote = ch;
      opened = i;
      in_word = true;
    } else if (std::isspace(static_cast<unsigned char>(ch))) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word.push_back(ch);
      in_word = true;
    }
  }
  if (quote) throw bad(std::string("the ") + quote + " at offset " + std::to_string(opened) + " is never closed");
  if (in_word) words.push_back(std::move(word));
  return words;
}

// The metrics address of a create, and whether RDMAPS_METRICS gave it.
struct Metrics {
  std::string address;
  bool from_variable = false;

  // The endpoint names "--metrics" when it cannot listen; the user may have
  // given only the variable, which every server and worker of the process
  // reads (a server and a worker in one process meet at its port).
  template <typename Create>
  void naming_source(Create create) const {
    try {
      create();
    } catch (const rdmaps::Error& e) {
      const std::string what = e.what();
      if (!from_variable || !what.starts_with("--metrics ")) throw;
      throw rdmaps::Error(e.code(), "RDMAPS_METRICS" + what.substr(std::strlen("--metrics")) +
                                        " (RDMAPS_METRICS applies to every server and worker this process "
                                        "creates: give each its own with --metrics in its config)");
    }
  }
};

// `metrics`: where "--metrics HOST:PORT" (else RDMAPS_METRICS, as the programs
// read it) asks for the metrics endpoint. It is the process's, not the job's
// configuration, so Config does not carry it. `rule_from_workers`: a server's
// switch (null for a worker, which refuses it).
rdmaps::Config parse_flags(const char* text, Metrics* metrics, bool* rule_from_workers = nullptr) {
  rdmaps::Config config;
  std::vector<std::string> args, rest;
  const std::vector<std::string> words = config_words(text ? text : "");
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word == "--rule-from-workers" || word.starts_with("--rule-from-workers=")) {
      if (!rule_from_workers)
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument,
                            "--rule-from-workers is a server's flag (rdmaps_server_options.config), not a worker's");
      // A switch as the programs take it: alone, or on|off after it or after '=' ("on" was an unknown flag).
      std::string value = "on";
      if (const size_t eq = word.find('='); eq != std::string::npos)
        value = word.substr(eq + 1);
      else if (i + 1 < words.size() && !words[i + 1].starts_with("-"))
        value = words[++i];
      if (value != "on" && value != "off" && value != "true" && value != "false" && value != "1" && value != "0")
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "--rule-from-workers: '" + value + "' is not on or off");
      *rule_from_workers = value == "on" || value == "true" || value == "1";
      continue;
    }
    if (word == "--metrics") {
      if (i + 1 == words.size() || words[i + 1].empty())
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "--metrics needs HOST:PORT");
      metrics->address = words[++i];
      continue;
    }
    if (word.starts_with("--metrics=")) {  // as every other flag takes --flag=value
      metrics->address = word.substr(std::strlen("--metrics="));
      if (metrics->address.empty()) throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "--metrics= needs HOST:PORT");
      continue;
    }
    args.push_back(word);
  }
  rdmaps::parse_config(config, args, &rest);
  if (!rest.empty())
    throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "unknown configuration flag '" + rest[0] + "'");
  if (const char* env = std::getenv("RDMAPS_METRICS"); metrics->address.empty() && env) {
    if (!*env)
      throw rdmaps::Error(rdmaps::Errc::kInvalidArgument,
                          "RDMAPS_METRICS is set but empty: give HOST:PORT, or unset it for no metrics endpoint");
    metrics->address = env;
    metrics->from_variable = true;
  }
  return config;
}

}  // namespace

extern "C" {

const char* rdmaps_last_error(void) { return g_last_error.c_str(); }

void rdmaps_set_log_callback(rdmaps_log_callback callback, void* user) {
  // Out of memory keeps the sink there was (the function returns no status).
  guarded("rdmaps_set_log_callback", [&] {
    if (!callback) return rdmaps::set_log_sink(nullptr);
    rdmaps::set_log_sink([callback, user](rdmaps::LogLevel level, const std::string& line) {
      callback(static_cast<rdmaps_log_level>(level), line.c_str(), user);
    });
  });
}

rdmaps_status rdmaps_set_log_level(rdmaps_log_level level) {
  return guarded("rdmaps_set_log_level", [&] {
    if (level < RDMAPS_LOG_DEBUG || level > RDMAPS_LOG_OFF)
      throw rdmaps::Error(rdmaps::Errc::kInvalidArgument,
                          std::to_string(static_cast<int>(level)) + " is not a log level");
    rdmaps::set_log_level(static_cast<rdmaps::LogLevel>(level));
  });
}

const char* rdmaps_status_name(rdmaps_status status) {
  if (status == RDMAPS_OK) return "ok";
  if (status < RDMAPS_OK || status > RDMAPS_ERR_REFUSED_FOR_NOW) return "unknown";
  return rdmaps::errc_name(static_cast<rdmaps::Errc>(status - 1));
}

rdmaps_status rdmaps_client_create(const rdmaps_client_options* options, rdmaps_client** out) {
  return guarded("rdmaps_client_create", [&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    rdmaps::ClientOptions o;
    const bool given = options && options->servers;
    const char* servers = given ? options->servers : std::getenv("RDMAPS_SERVERS");
    // Set but empty is unset, as every RDMAPS_ variable.
    require(servers != nullptr && (given || *servers),
            "no servers: set options.servers or RDMAPS_SERVERS (host:port,host:port)");
    const char* source = given ? "options.servers" : "RDMAPS_SERVERS";
    o.servers = rdmaps::launch::server_list(servers, source);
    int64_t worker = options ? options->worker : -1;
    require(worker >= -1, "options.worker is " + std::to_string(worker) + ": a worker id, or -1 for RDMAPS_WORKER");
    std::string named = "worker id " + std::to_string(worker);
    if (worker < 0) {
      const char* env = std::getenv("RDMAPS_WORKER");
      require(env != nullptr, "no worker id: set options.worker or RDMAPS_WORKER");
      // Decimal digits only: strtoll took " 5" and "+5".
      const rdmaps::cli::Decimal d = rdmaps::cli::parse_decimal(env);
      require(d.digits && !d.too_large && d.value <= INT64_MAX,
              std::string("RDMAPS_WORKER='") + env + "' is not a non-negative integer");
      worker = static_cast<int64_t>(d.value);
      named = std::string("RDMAPS_WORKER=") + env;
    }
    require(worker < rdmaps::kMaxWorkers,
            named + " is not below " + std::to_string(rdmaps::kMaxWorkers) + ", the most a server serves");
    o.worker = static_cast<uint32_t>(worker);
    Metrics metrics;
    o.config = parse_flags(options ? options->config : nullptr, &metrics);
    o.metrics = metrics.address;
    if (options && options->timeout_ms) o.timeout = std::chrono::milliseconds(options->timeout_ms);
    auto handle = std::make_unique<rdmaps_client>();
    metrics.naming_source([&] { handle->client = std::make_unique<rdmaps::Client>(o); });
    *out = handle.release();
  });
}

rdmaps_status rdmaps_client_declare(rdmaps_client* c, const char* name, size_t floats) {
  return guarded("rdmaps_client_declare", [&] {
    require_given({{"client", c}, {"name", name}});
    c->client->declare(name, floats);
  });
}

rdmaps_status rdmaps_client_connect(rdmaps_client* c) {
  return guarded("rdmaps_client_connect", [&] {
    require(c, "client is NULL");
    c->client->connect();
  });
}

rdmaps_status rdmaps_client_init(rdmaps_client* c, const char* name, const float* values, size_t floats) {
  return guarded("rdmaps_client_init", [&] {
    require_given({{"client", c}, {"name", name}, {"values", values}});
    c->client->init(name, {values, floats});
  });
}

rdmaps_status rdmaps_client_push(rdmaps_client* c, const char* name, const float* gradient, size_t floats) {
  return guarded("rdmaps_client_push", [&] {
    require_given({{"client", c}, {"name", name}, {"gradient", gradient}});
    c->client->push(name, {gradient, floats});
  });
}

rdmaps_status rdmaps_client_pull(rdmaps_client* c, const char* name, float* out, size_t floats) {
  return guarded("rdmaps_client_pull", [&] {
    require_given({{"client", c}, {"name", name}, {"out", out}});
    c->client->pull(name, {out, floats});
  });
}

rdmaps_status rdmaps_client_pull_many(rdmaps_client* c, size_t count, const char* const* names, float* const* outs,
                                      const size_t* floats) {
  return guarded("rdmaps_client_pull_many", [&] {
    require_given({{"client", c}});
    if (count) require_given({{"names", names}, {"outs", outs}, {"floats", floats}});
    // No table has this many tensors (a Hello of at most 16 MiB declares under 2^21): a count
    // that is (size_t)-1 or garbage, not a list to reserve for (2^31 ran out of memory).
    require(count <= (size_t{1} << 24), "count " + std::to_string(count) + " is not the length of the arrays");
    std::vector<rdmaps::PullTarget> targets;
    targets.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      require(names[i], "names[" + std::to_string(i) + "] is NULL");
      require(outs[i], "outs[" + std::to_string(i) + "] is NULL");
      targets.push_back({names[i], {outs[i], floats[i]}});
    }
    c->client->pull(targets);
  });
}

rdmaps_status rdmaps_client_register_memory(rdmaps_client* c, float* data, size_t floats) {
  return guarded("rdmaps_client_register_memory", [&] {
    require_given({{"client", c}, {"data", data}});
    c->client->register_memory({data, floats});
  });
}

rdmaps_status rdmaps_client_clock(rdmaps_client* c) {
  return guarded("rdmaps_client_clock", [&] {
    require(c, "client is NULL");
    c->client->clock();
  });
}

rdmaps_status rdmaps_client_barrier(rdmaps_client* c) {
  return guarded("rdmaps_client_barrier", [&] {
    require(c, "client is NULL");
    c->client->barrier();
  });
}

rdmaps_status rdmaps_client_set_learning_rate(rdmaps_client* c, float lr) {
  return guarded("rdmaps_client_set_learning_rate", [&] {
    require(c, "client is NULL");
    c->client->set_learning_rate(lr);
  });
}

rdmaps_status rdmaps_client_use_server_learning_rate(rdmaps_client* c) {
  return guarded("rdmaps_client_use_server_learning_rate", [&] {
    require(c, "client is NULL");
    c->client->set_learning_rate(std::nullopt);
  });
}

rdmaps_status rdmaps_client_get_stats(const rdmaps_client* c, rdmaps_client_stats* out) {
  return guarded("rdmaps_client_get_stats", [&] {
    require_given({{"client", c}, {"out", out}});
    *out = {};  // a failed call leaves zeros, not what the caller's memory held
    rdmaps::ClientStats s = c->client->stats();
    *out = rdmaps_client_stats{s.pushes,
                               s.push_bytes,
                               s.pulls,
                               s.pull_bytes,
                               s.pulls_skipped,
                               s.pull_bytes_saved,
                               s.clocks,
                               c->client->clock_value(),
                               s.clock_wait_seconds,
                               s.reconnects,
                               s.pushes_lost};
  });
}

rdmaps_status rdmaps_client_messages_rejected(const rdmaps_client* c, uint64_t* out) {
  return guarded("rdmaps_client_messages_rejected", [&] {
    require_given({{"client", c}, {"out", out}});
    *out = c->client->messages_rejected();
  });
}

rdmaps_status rdmaps_client_interrupt(rdmaps_client* c) {
  return guarded("rdmaps_client_interrupt", [&] {
    require(c, "client is NULL");
    c->client->interrupt();
  });
}

void rdmaps_client_destroy(rdmaps_client* c) { delete c; }

rdmaps_status rdmaps_server_create(const rdmaps_server_options* options, rdmaps_server** out) {
  return guarded("rdmaps_server_create", [&] {
    require(out != nullptr, "out is NULL");
    *out = nullptr;
    rdmaps::ServerOptions o;
    if (options && options->listen) o.listen = options->listen;
    o.index = options ? options->index : 0;
    o.servers = options && options->servers ? options->servers : 1;
    o.workers = options && options->workers ? options->workers : 1;
    Metrics metrics;
    o.config = parse_flags(options ? options->config : nullptr, &metrics, &o.rule_from_workers);
    o.metrics = metrics.address;
    require(!options || options->insecure <= 1,
            "options.insecure is " + std::to_string(options ? options->insecure : 0) + ": 0 or 1");
    o.insecure = options && options->insecure;
    o.max_bytes = options ? options->max_bytes : 0;
    auto handle = std::make_unique<rdmaps_server>();
    metrics.naming_source([&] { handle->server = std::make_unique<rdmaps::Server>(o); });
    *out = handle.release();
  });
}

rdmaps_status rdmaps_server_address(const rdmaps_server* s, char* buf, size_t size) {
  return guarded("rdmaps_server_address", [&] {
    require_given({{"server", s}, {"buf", buf}});
    copy_out(s->server->address(), "address", buf, size);
  });
}

rdmaps_status rdmaps_server_metrics_address(const rdmaps_server* s, char* buf, size_t size) {
  return guarded("rdmaps_server_metrics_address", [&] {
    require_given({{"server", s}, {"buf", buf}});
    copy_out(s->server->metrics_address(), "metrics address", buf, size);
  });
}

rdmaps_status rdmaps_client_metrics_address(const rdmaps_client* c, char* buf, size_t size) {
  return guarded("rdmaps_client_metrics_address", [&] {
    require_given({{"client", c}, {"buf", buf}});
    copy_out(c->client->metrics_address(), "metrics address", buf, size);
  });
}

rdmaps_status rdmaps_server_run(rdmaps_server* s) {
  return guarded("rdmaps_server_run", [&] {
    require(s, "server is NULL");
    struct Running {
      rdmaps_server& s;
      explicit Running(rdmaps_server& server) : s(server) {
        std::lock_guard<std::mutex> lock(s.mu);
        ++s.running;
      }
      ~Running() {
        bool last = false;
        {
          std::lock_guard<std::mutex> lock(s.mu);
          --s.running;
          s.idle.notify_all();
          last = s.destroy_on_return && s.running == 0;
        }
        if (last) delete &s;
      }
    } running(*s);
    s->server->run();
    rdmaps::throw_if_model_unsaved(s->server->stats());  // rdmaps-server exits 1 here too
  });
}

void rdmaps_server_stop(rdmaps_server* s) {
  if (s) s->server->stop();
}

rdmaps_status rdmaps_server_get_stats(const rdmaps_server* s, rdmaps_server_stats* out) {
  return guarded("rdmaps_server_get_stats", [&] {
    require_given({{"server", s}, {"out", out}});
    *out = {};  // a failed call leaves zeros
    rdmaps::ServerStats st = s->server->stats();
    *out = rdmaps_server_stats{st.pushes, st.pulls, st.clocks, st.rejected, st.dropped, st.min_clock};
  });
}

void rdmaps_server_destroy(rdmaps_server* s) {
  if (!s || s->owner != rdmaps::transport::this_process_id()) return;  // a forked child's: left to its exit
  s->server->stop();                                                   // a run() on another thread returns soon
  {
    std::unique_lock<std::mutex> lock(s->mu);
    // From a log callback the run waited for may be this thread's own, or wait
    // for this thread (a lane's) to end: waiting here hung for good. The
    // run's end frees it.
    if (s->running > 0 && rdmaps::in_log_sink()) {
      s->destroy_on_return = true;
      return;
    }
    s->idle.wait(lock, [&] { return s->running == 0; });
  }
  delete s;
}

}  // extern "C"
