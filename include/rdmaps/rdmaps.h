/* rdmaps C ABI: opaque handles, plain C types, a status code per call and the
 * last error's message per thread. No C++ type crosses this boundary. A call
 * that fails leaves its outputs empty: a NULL handle, an empty string, zeros. */
#ifndef RDMAPS_RDMAPS_H
#define RDMAPS_RDMAPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  RDMAPS_OK = 0,
  RDMAPS_ERR_INVALID_ARGUMENT,
  RDMAPS_ERR_PERMISSION_DENIED,
  RDMAPS_ERR_OUT_OF_BOUNDS,
  RDMAPS_ERR_TIMEOUT,
  RDMAPS_ERR_UNREACHABLE,
  RDMAPS_ERR_PEER_GONE,
  RDMAPS_ERR_PROTOCOL, /* malformed bytes from a peer, or a server refused this worker for good (why: the message) */
  RDMAPS_ERR_NO_MEMORY,
  RDMAPS_ERR_UNSUPPORTED,
  RDMAPS_ERR_IO,
  RDMAPS_ERR_INTERNAL,
  RDMAPS_ERR_CANCELLED, /* rdmaps_client_interrupt() ended the call */
  /* A server refused this worker for now (no memory for it yet, stopping, its
   * job over; why: the message): a later rdmaps_client_connect may pass. */
  RDMAPS_ERR_REFUSED_FOR_NOW
} rdmaps_status;

/** Message of the last failed call on this thread ("" if none); valid until
 *  the next failed call on this thread: copy it to keep it. */
const char* rdmaps_last_error(void);
/** Short stable name of a status ("timeout", ...). */
const char* rdmaps_status_name(rdmaps_status status);

typedef struct rdmaps_client rdmaps_client;
typedef struct rdmaps_server rdmaps_server;

/** Worker options. NULL servers and worker -1 fall back to RDMAPS_SERVERS and
 * RDMAPS_WORKER. The RDMAPS_* configuration variables apply whatever `config`
 * holds, as they do for the programs: a flag in `config` overrides its
 * variable, and a set but empty or bad variable fails the create, naming it. */
typedef struct {
  const char* servers; /**< "host:port,host:port" in server-index order */
  int32_t worker;      /**< worker id; -1 = from RDMAPS_WORKER */
  const char* config;  /**< flags of rdmaps-server --help's "Parameter-server configuration" and
                          --metrics (else RDMAPS_METRICS), e.g. "--staleness 3 --transport tcp" (a worker's
                          own flags are the fields here);
                          "--metrics HOST:PORT" serves Prometheus metrics (docs/observability.md); words are
                          split as a shell would: "--checkpoint-dir '/data/my run'" */
  uint32_t timeout_ms; /**< bound of every wait; 0 = 60000. A call whose wait failed takes up to one more
                          for the sends it still had in flight (a push to a stopped server: twice this) */
} rdmaps_client_options;

typedef struct {
  uint64_t pushes, push_bytes, pulls, pull_bytes, pulls_skipped, pull_bytes_saved, clocks, clock;
  double clock_wait_seconds;
  /** Servers that restarted and were reconnected to ("--reconnect SEC" in config), and
   * the pushes they lost (sent after their last checkpoint). */
  uint64_t reconnects, pushes_lost;
} rdmaps_client_stats;

rdmaps_status rdmaps_client_create(const rdmaps_client_options* options, rdmaps_client** out);
rdmaps_status rdmaps_client_declare(rdmaps_client* client, const char* name, size_t floats);
/** Connects to every server, waiting up to the options' timeout for each one
 *  not listening yet (workers may start before their servers). Again after it succeeded: nothing to do, or
 *  RDMAPS_ERR_PEER_GONE where a server was lost since (it does not reconnect). */
rdmaps_status rdmaps_client_connect(rdmaps_client* client);
/** A push or init that failed (timeout, RDMAPS_ERR_CANCELLED) with a send still
 *  under way (a stopped server) leaves the client taking no more calls, and that
 *  send reads `values` or `gradient` until the client is destroyed: destroy it
 *  before freeing that memory. */
rdmaps_status rdmaps_client_init(rdmaps_client* client, const char* name, const float* values, size_t floats);
rdmaps_status rdmaps_client_push(rdmaps_client* client, const char* name, const float* gradient, size_t floats);
rdmaps_status rdmaps_client_pull(rdmaps_client* client, const char* name, float* out, size_t floats);
/** Pulls `count` tensors (names[i] into outs[i], floats[i] each) with one
 *  request per run of tensors adjoining in the table and server lane: a whole
 *  model after each step, one per lane. A `char**`
 *  list of names is passed as `(const char* const*)names` (C converts no
 *  pointer to pointer implicitly). */
rdmaps_status rdmaps_client_pull_many(rdmaps_client* client, size_t count, const char* const* names, float* const* outs,
                                      const size_t* floats);
/** Host memory (`floats` floats at `data`) that stays valid until the client
 *  is destroyed: pulls into it land in place over tcp, and by put where
 *  --put-landing allows, saving a copy (after connecting, once every server
 *  thread took it); a pull that failed may still write there until then
 *  (docs/protocol.md "Landing in place"). */
rdmaps_status rdmaps_client_register_memory(rdmaps_client* client, float* data, size_t floats);
rdmaps_status rdmaps_client_clock(rdmaps_client* client);
rdmaps_status rdmaps_client_barrier(rdmaps_client* client);
/** Later pushes carry this learning rate (finite, >= 0), applied instead of
 *  the servers' (a schedule on the worker). At 0 a push changes no parameter
 *  but is still a step: momentum and the mean square take its gradient. */
rdmaps_status rdmaps_client_set_learning_rate(rdmaps_client* client, float lr);
/** Later pushes take the servers' configured learning rate again. */
rdmaps_status rdmaps_client_use_server_learning_rate(rdmaps_client* client);
rdmaps_status rdmaps_client_get_stats(const rdmaps_client* client, rdmaps_client_stats* out);
/** Messages of this worker the servers rejected (a gradient with NaN or Inf
 *  under --check-nan, a malformed message; each is logged by its server):
 *  such a push returned RDMAPS_OK and changed no parameter. Counted as the
 *  servers report them back: after a pull, the pushes before it are; kept
 *  across reconnects. Not in rdmaps_client_stats: that struct's layout is the ABI. */
rdmaps_status rdmaps_client_messages_rejected(const rdmaps_client* client, uint64_t* out);
/** The one call for any thread (a client otherwise serves one thread at a
 *  time, in the process that created it; of two calls at once from two
 *  threads the later fails with RDMAPS_ERR_INVALID_ARGUMENT, whichever thread
 *  made it, the training thread's too, and so does any call from a forked
 *  child; rdmaps_client_get_stats is such a call: poll the counters from
 *  another thread through the "--metrics" endpoint instead): a call of
 *  `client` in progress on another thread (a clock waiting for a straggler, a
 *  pull) returns RDMAPS_ERR_CANCELLED soon, and so does every later one but
 *  rdmaps_client_get_stats, rdmaps_client_messages_rejected and
 *  rdmaps_client_metrics_address, which still answer (the last from any
 *  thread: it reads what create() set).
 *  Destroy the client once that call returned. */
rdmaps_status rdmaps_client_interrupt(rdmaps_client* client);
/** Where "--metrics" serves GET /metrics (the real port when it gave 0), or
 *  "" without it; NUL-terminated into buf. */
rdmaps_status rdmaps_client_metrics_address(const rdmaps_client* client, char* buf, size_t size);
/** Tells the servers this worker leaves and returns once each took in
 *  everything it sent (or its timeout, at most 5 s, passed: sends still in
 *  flight to a silent server are abandoned then); NULL is fine. A call of the client in
 *  progress on another thread is interrupted and waited for first (with a warning: interrupt it,
 *  and destroy once it returned); from the log callback during a call of its own, it ends that call
 *  and leaves the client's memory in place. In a forked child it frees nothing of the parent's. */
void rdmaps_client_destroy(rdmaps_client* client);

typedef struct {
  const char* listen;               /**< "host:port", port 0 = any; NULL = "0.0.0.0:13337" */
  uint32_t index, servers, workers; /**< 0 servers/workers = 1 */
  const char* config;               /**< flags, as for the client ("--secret-file F", "--metrics HOST:PORT", ...;
                                         the RDMAPS_* configuration variables apply as they do there),
                                         and "--rule-from-workers [on|off]"; rdmaps-server's other own flags (--gpu-shard,
                                         --keep-running, --stats-interval, --stall-warning) are not taken here */
  uint32_t insecure;                /**< 1: serve off loopback without a shared secret (docs/security.md) */
  uint64_t max_bytes;               /**< largest table a worker may declare; 0 = the machine's memory */
} rdmaps_server_options;

typedef struct {
  uint64_t pushes, pulls, clocks, rejected, dropped, min_clock;
} rdmaps_server_stats;

rdmaps_status rdmaps_server_create(const rdmaps_server_options* options, rdmaps_server** out);
/** The bound address, e.g. "127.0.0.1:41234", NUL-terminated into buf. */
rdmaps_status rdmaps_server_address(const rdmaps_server* server, char* buf, size_t size);
/** Where "--metrics" serves GET /metrics (the real port when it gave 0), or
 *  "" without it; NUL-terminated into buf. */
rdmaps_status rdmaps_server_metrics_address(const rdmaps_server* server, char* buf, size_t size);
/** Serves until rdmaps_server_stop() or until every worker left. With
 *  "--checkpoint-dir", RDMAPS_ERR_IO if the final checkpoint could not be
 *  written (the model is not saved). A server thread that fails (out of
 *  memory, a GPU error) stops the server with that thread's error. Its
 *  port closes as it returns: a worker connecting later is told nobody
 *  listens there, and the next job's server may take the port. */
rdmaps_status rdmaps_server_run(rdmaps_server* server);
void rdmaps_server_stop(rdmaps_server* server);
/** Refused (invalid argument) in a child forked from the server's process. */
rdmaps_status rdmaps_server_get_stats(const rdmaps_server* server, rdmaps_server_stats* out);
/** Stops a run in progress on another thread and waits until its
 *  rdmaps_server_run returned; NULL is fine. A run not yet begun is not
 *  waited for: where a thread may still be about to call rdmaps_server_run,
 *  call rdmaps_server_stop (a run after it returns at once), join that
 *  thread, then destroy. In a forked child it frees nothing of the parent's
 *  (rdmaps_server_run there fails with RDMAPS_ERR_INVALID_ARGUMENT). */
/* From within the log callback while the server runs, it stops the server
 * and returns; the run frees it as it returns. */
void rdmaps_server_destroy(rdmaps_server* server);

/** The library's log (docs/observability.md "Logs"): stderr by default, at
 * RDMAPS_LOG_LEVEL (debug, info, warn, error, off; info if unset). */
typedef enum {
  RDMAPS_LOG_DEBUG = 0,
  RDMAPS_LOG_INFO,
  RDMAPS_LOG_WARN,
  RDMAPS_LOG_ERROR,
  RDMAPS_LOG_OFF
} rdmaps_log_level;
/** Receives each line (no newline), from any library thread, one call at a
 * time. It may call rdmaps_set_log_callback; lines it logs go to stderr. */
typedef void (*rdmaps_log_callback)(rdmaps_log_level level, const char* line, void* user);
/** Sends the log to `callback` with `user`; NULL returns it to stderr. On
 * return the old callback is no longer running (unless called from it). */
void rdmaps_set_log_callback(rdmaps_log_callback callback, void* user);
/** Drops lines below `level`. */
rdmaps_status rdmaps_set_log_level(rdmaps_log_level level);

#ifdef __cplusplus
}
#endif

#endif /* RDMAPS_RDMAPS_H */
