/* The C ABI, compiled as C, against a real server: a worker trains a step,
 * bad input gets a status and a message naming what was wrong, and a worker
 * reconnects to a server restarted from its checkpoint. */
#define _POSIX_C_SOURCE 200809L /* unsetenv */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rdmaps/rdmaps.h"

static int failures = 0;
#define CHECK(cond, ...)                                     \
  do {                                                       \
    if (!(cond)) {                                           \
      fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                          \
      fprintf(stderr, "\n");                                 \
      ++failures;                                            \
    }                                                        \
  } while (0)

static void* serve(void* server) {
  rdmaps_status st = rdmaps_server_run((rdmaps_server*)server);
  if (st != RDMAPS_OK) fprintf(stderr, "server: %s\n", rdmaps_last_error());
  return NULL;
}

/* A 1-worker server on loopback with `config` ("--transport tcp" and more),
 * serving on *thread; its address into `address` (64 bytes). NULL if it could not be made. */
static rdmaps_server* start_tcp_server(const char* config, pthread_t* thread, char* address) {
  rdmaps_server_options so = {"127.0.0.1:0", 0, 1, 1, config, 0, 0};
  rdmaps_server* server = NULL;
  CHECK(rdmaps_server_create(&so, &server) == RDMAPS_OK, "server: %s", rdmaps_last_error());
  if (!server) return NULL;
  CHECK(rdmaps_server_address(server, address, 64) == RDMAPS_OK, "address: %s", rdmaps_last_error());
  pthread_create(thread, NULL, serve, server);
  return server;
}

/* A 1-worker SGD server over tcp checkpointing into `dir` (`flags` added),
 * listening at `listen` and running on *thread with `run`; its address into
 * `address`. NULL if it could not be made. */
static rdmaps_server* start_checkpointing_server(const char* dir, const char* flags, const char* listen,
                                                 void* (*run)(void*), pthread_t* thread, char* address) {
  char config[256];
  /* The directory's name has a blank: quoted, it is one word of the config. */
  snprintf(config, sizeof(config), "--transport tcp --rule sgd --lr 0.5 --checkpoint-dir '%s' %s", dir, flags);
  rdmaps_server_options so = {listen, 0, 1, 1, config, 0, 0};
  rdmaps_server* server = NULL;
  CHECK(rdmaps_server_create(&so, &server) == RDMAPS_OK, "server at %s: %s", listen, rdmaps_last_error());
  if (!server) return NULL;
  rdmaps_server_address(server, address, 128);
  pthread_create(thread, NULL, run, server);
  return server;
}

/* A push the server rejects (NaN under --check-nan) returns RDMAPS_OK, changes
 * nothing, and is counted by the worker once a pull followed it. */
static void rejected_push_is_counted(void) {
  const char* config = "--transport tcp --rule sgd --lr 0.5 --check-nan";
  pthread_t thread;
  char address[64];
  rdmaps_server* server = start_tcp_server(config, &thread, address);
  if (!server) return;
  rdmaps_client_options co = {address, 0, config, 10000};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  float w[8], g[8], got[8];
  for (int i = 0; i < 8; ++i) w[i] = 1.0f, g[i] = 1.0f;
  g[3] = NAN;
  uint64_t rejected = 99;
  CHECK(client && rdmaps_client_declare(client, "w", 8) == RDMAPS_OK && rdmaps_client_connect(client) == RDMAPS_OK &&
            rdmaps_client_init(client, "w", w, 8) == RDMAPS_OK,
        "connect: %s", rdmaps_last_error());
  CHECK(rdmaps_client_push(client, "w", g, 8) == RDMAPS_OK && rdmaps_client_pull(client, "w", got, 8) == RDMAPS_OK &&
            got[0] == 1.0f && got[3] == 1.0f,
        "the rejected push: %s, w[0] %f", rdmaps_last_error(), got[0]);
  CHECK(rdmaps_client_messages_rejected(client, &rejected) == RDMAPS_OK && rejected == 1,
        "%llu messages rejected after one NaN push: %s", (unsigned long long)rejected, rdmaps_last_error());
  g[3] = 1.0f;
  CHECK(rdmaps_client_push(client, "w", g, 8) == RDMAPS_OK && rdmaps_client_pull(client, "w", got, 8) == RDMAPS_OK &&
            got[3] == 0.5f && rdmaps_client_messages_rejected(client, &rejected) == RDMAPS_OK && rejected == 1,
        "a good push after it: w[3] %f, %llu rejected", got[3], (unsigned long long)rejected);
  CHECK(rdmaps_client_messages_rejected(client, NULL) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "rdmaps_client_messages_rejected: out is NULL"),
        "NULL out: %s", rdmaps_last_error());
  rdmaps_client_destroy(client);
  pthread_join(thread, NULL);
  rdmaps_server_destroy(server);
}

/* A server stopped (it writes a last checkpoint) and started again with
 * --resume at the same address: a worker given --reconnect goes on from there. */
static void restart_from_checkpoint(void) {
  char dir[] = "/tmp/rdmaps c abi ckpt XXXXXX";
  CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
  char address[128];
  pthread_t thread;
  rdmaps_server* first = start_checkpointing_server(dir, "--resume", "127.0.0.1:0", serve, &thread, address);
  if (!first) return;
  rdmaps_client_options co = {address, 0, "--transport tcp --rule sgd --lr 0.5 --reconnect 20", 0};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  if (!client) return;
  float w[100], g[100];
  for (int i = 0; i < 100; ++i) w[i] = 1.0f, g[i] = 1.0f;
  CHECK(rdmaps_client_declare(client, "w", 100) == RDMAPS_OK && rdmaps_client_connect(client) == RDMAPS_OK &&
            rdmaps_client_init(client, "w", w, 100) == RDMAPS_OK &&
            rdmaps_client_push(client, "w", g, 100) == RDMAPS_OK &&
            rdmaps_client_pull(client, "w", w, 100) == RDMAPS_OK,
        "training before the restart: %s", rdmaps_last_error());
  rdmaps_server_stop(first);
  pthread_join(thread, NULL);
  rdmaps_server_destroy(first);
  rdmaps_server* second = start_checkpointing_server(dir, "--resume", address, serve, &thread, address);
  if (!second) return;
  w[0] = w[99] = -1.0f;
  CHECK(rdmaps_client_pull(client, "w", w, 100) == RDMAPS_OK, "pull after the restart: %s", rdmaps_last_error());
  CHECK(w[0] == 0.5f && w[99] == 0.5f, "the restarted server should hold 0.5, got %f", w[0]);
  CHECK(rdmaps_client_push(client, "w", g, 100) == RDMAPS_OK && rdmaps_client_pull(client, "w", w, 100) == RDMAPS_OK,
        "training after the restart: %s", rdmaps_last_error());
  CHECK(w[0] == 0.0f, "a step after the restart should give 0, got %f", w[0]);
  rdmaps_client_stats cs = {0};
  CHECK(rdmaps_client_get_stats(client, &cs) == RDMAPS_OK, "stats: %s", rdmaps_last_error());
  CHECK(cs.reconnects == 1 && cs.pushes_lost == 0, "%llu reconnects, %llu pushes lost",
        (unsigned long long)cs.reconnects, (unsigned long long)cs.pushes_lost);
  rdmaps_client_destroy(client);
  pthread_join(thread, NULL);
  rdmaps_server_destroy(second);
  char rm[300];
  snprintf(rm, sizeof(rm), "rm -rf '%s'", dir);
  CHECK(system(rm) == 0, "removing %s", dir);
}

static void* serve_status(void* server) {
  static rdmaps_status status;
  status = rdmaps_server_run((rdmaps_server*)server);
  if (status != RDMAPS_OK) fprintf(stderr, "server (expected to fail): %s\n", rdmaps_last_error());
  return &status;
}

/* A final checkpoint that cannot be written (its directory became a file)
 * fails the run: the caller learns that the model is not saved. */
/* The value of metric `name` (its first series) at the metrics endpoint "127.0.0.1:PORT", or -1. */
static double scrape(const char* address, const char* name) {
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)atoi(strchr(address, ':') + 1));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  static char page[1 << 16];
  size_t got = 0;
  if (fd >= 0 && connect(fd, (struct sockaddr*)&to, sizeof(to)) == 0) {
    const char request[] = "GET /metrics HTTP/1.0\r\n\r\n";
    if (write(fd, request, sizeof(request) - 1) == (ssize_t)(sizeof(request) - 1)) {
      ssize_t n;
      while (got + 1 < sizeof(page) && (n = read(fd, page + got, sizeof(page) - 1 - got)) > 0) got += (size_t)n;
    }
  }
  if (fd >= 0) close(fd);
  page[got] = '\0';
  const size_t length = strlen(name);
  for (const char* line = page; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (strncmp(line, name, length) == 0 && (line[length] == ' ' || line[length] == '{')) {
      const char* value = strchr(line + length, ' ');
      return value ? atof(value + 1) : -1;
    }
  return -1;
}

static void final_checkpoint_failure(void) {
  char dir[] = "/tmp/rdmaps c abi final XXXXXX";
  CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
  char address[128];
  pthread_t thread;
  rdmaps_server* server = start_checkpointing_server(dir, "", "127.0.0.1:0", serve_status, &thread, address);
  if (!server) return;
  rdmaps_client_options co = {address, 0, "--transport tcp --rule sgd --lr 0.5 --metrics 127.0.0.1:0", 0};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  float w[100];
  for (int i = 0; i < 100; ++i) w[i] = 1.0f;
  CHECK(client && rdmaps_client_register_memory(client, NULL, 100) == RDMAPS_ERR_INVALID_ARGUMENT,
        "NULL memory registered");
  CHECK(client && rdmaps_client_register_memory(client, w, 0) == RDMAPS_ERR_INVALID_ARGUMENT, "no memory registered");
  /* w outlives the client: pulls into it land in place over tcp */
  CHECK(client && rdmaps_client_register_memory(client, w, 100) == RDMAPS_OK &&
            rdmaps_client_declare(client, "w", 100) == RDMAPS_OK && rdmaps_client_connect(client) == RDMAPS_OK &&
            rdmaps_client_init(client, "w", w, 100) == RDMAPS_OK &&
            rdmaps_client_push(client, "w", w, 100) == RDMAPS_OK,
        "training: %s", rdmaps_last_error());
  w[0] = w[99] = -7.0f;
  CHECK(rdmaps_client_pull(client, "w", w, 100) == RDMAPS_OK && w[0] == 0.5f && w[99] == 0.5f,
        "pull into registered memory: %s, w[0] %f", rdmaps_last_error(), w[0]);
  /* In place, not copied: the values alone came either way. */
  char metrics_at[128] = "";
  const double in_place = client && rdmaps_client_metrics_address(client, metrics_at, sizeof(metrics_at)) == RDMAPS_OK
                              ? scrape(metrics_at, "rdmaps_worker_pull_bytes_in_place_total")
                              : -1;
  CHECK(in_place >= 400, "the pull into registered memory landed %.0f bytes in place (of 400) at '%s'", in_place,
        metrics_at);
  char swap[300];
  snprintf(swap, sizeof(swap), "rm -rf '%s' && touch '%s'", dir, dir);
  CHECK(system(swap) == 0, "replacing %s by a file", dir);
  rdmaps_client_destroy(client); /* the worker leaves: run() ends with the final checkpoint */
  void* result = NULL;
  pthread_join(thread, &result);
  CHECK(result && *(rdmaps_status*)result == RDMAPS_ERR_IO, "rdmaps_server_run returned %s, expected io",
        result ? rdmaps_status_name(*(rdmaps_status*)result) : "nothing");
  rdmaps_server_destroy(server);
  remove(dir);
}

/* The library's log lines, taken by the trainer instead of stderr. */
static char g_log[8192];
static int g_log_lines, g_log_bad_level;
static void take_log(rdmaps_log_level level, const char* line, void* user) {
  if (level < RDMAPS_LOG_DEBUG || level > RDMAPS_LOG_ERROR || user != (void*)g_log) g_log_bad_level = 1;
  ++g_log_lines;
  const size_t room = sizeof(g_log) - strlen(g_log); /* a full log keeps its first lines */
  if (room < 3) return;
  strncat(g_log, line, room - 2);
  strcat(g_log, "\n");
}

/* Destroyed while it serves on another thread: the run returns and nothing
 * is read after the destroy freed it (rdmaps_server_run read the server's
 * stats after run() returned, racing the destroy). */
static void destroy_while_running(void) {
  rdmaps_server_options so = {"127.0.0.1:0", 0, 1, 1, "--transport tcp", 0, 0};
  rdmaps_server* server = NULL;
  CHECK(rdmaps_server_create(&so, &server) == RDMAPS_OK, "server: %s", rdmaps_last_error());
  if (!server) return;
  pthread_t thread;
  pthread_create(&thread, NULL, serve_status, server);
  /* Serving once a worker got in (a connect needs the run): a fixed 200 ms
   * could pass before the thread ran, and a run begun after the destroy is
   * not waited for (rdmaps.h). */
  char address[64];
  CHECK(rdmaps_server_address(server, address, sizeof address) == RDMAPS_OK, "address: %s", rdmaps_last_error());
  rdmaps_client_options co = {address, 0, "--transport tcp", 20000};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK && rdmaps_client_declare(client, "w", 4) == RDMAPS_OK &&
            rdmaps_client_connect(client) == RDMAPS_OK,
        "a worker of the running server: %s", rdmaps_last_error());
  rdmaps_server_destroy(server);
  void* status = NULL;
  pthread_join(thread, &status);
  CHECK(status && *(rdmaps_status*)status == RDMAPS_OK, "a run ended by destroy failed");
  rdmaps_client_destroy(client); /* its server gone: it leaves at once */
}

/* A child forked while the server runs on another thread: destroying its copy
 * waited for that run, which the child does not have, for good; the parent's
 * server serves on. */
static void forked_child_leaves_the_server_alone(void) {
  pthread_t thread;
  char address[64];
  rdmaps_server* server = start_tcp_server("--transport tcp", &thread, address);
  if (!server) return;
  const struct timespec tenth = {0, 100 * 1000 * 1000};
  nanosleep(&tenth, NULL); /* serving */
  const pid_t child = fork();
  if (child == 0) {
    alarm(10); /* a hang ends as SIGALRM */
    const int refused =
        rdmaps_server_run(server) == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "forked child") != NULL;
    /* Refused too, and its out left zeroed, not as the caller's memory held it. */
    rdmaps_server_stats stats;
    memset(&stats, 0xab, sizeof(stats));
    const int stats_zeroed =
        rdmaps_server_get_stats(server, &stats) != RDMAPS_OK && stats.pushes == 0 && stats.min_clock == 0;
    rdmaps_server_stop(server);
    rdmaps_server_destroy(server);
    _exit(!refused ? 3 : !stats_zeroed ? 4 : 0);
  }
  int status = 0;
  CHECK(child > 0 && waitpid(child, &status, 0) == child, "fork or waitpid failed");
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child %s %d",
        WIFEXITED(status) ? "exited with" : "was killed by signal",
        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  rdmaps_client_options co = {address, 0, "--transport tcp", 10000};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  CHECK(rdmaps_client_declare(client, "w", 4) == RDMAPS_OK, "declare: %s", rdmaps_last_error());
  CHECK(rdmaps_client_connect(client) == RDMAPS_OK, "connect after the child: %s", rdmaps_last_error());
  const float g[4] = {1, 2, 3, 4};
  CHECK(rdmaps_client_push(client, "w", g, 4) == RDMAPS_OK, "push after the child: %s", rdmaps_last_error());
  rdmaps_client_destroy(client); /* the run returns */
  pthread_join(thread, NULL);
  rdmaps_server_destroy(server);
}

/* Destroyed from the log callback, on a thread of the server's run (a lane's
 * here): the destroy waited for that run, which waits for this thread, for
 * good. The line that destroys it is the rejection of a pushed NaN, which
 * comes after the client's connect ended (at "connected" the connect could
 * still be importing the server's memory, and failed when CI was loaded). */
static int g_destroyed_in_callback;
static void destroy_in_callback(rdmaps_log_level level, const char* line, void* server) {
  (void)level;
  if (!g_destroyed_in_callback && strstr(line, "contains NaN or Inf")) {
    g_destroyed_in_callback = 1;
    rdmaps_server_destroy((rdmaps_server*)server);
  }
}
static void destroy_from_the_log_callback(void) {
  pthread_t thread;
  char address[64];
  rdmaps_server* server = start_tcp_server("--transport tcp --check-nan", &thread, address);
  if (!server) return;
  rdmaps_set_log_callback(destroy_in_callback, server);
  rdmaps_client_options co = {address, 0, "--transport tcp", 10000};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  CHECK(rdmaps_client_declare(client, "w", 4) == RDMAPS_OK, "declare: %s", rdmaps_last_error());
  CHECK(rdmaps_client_connect(client) == RDMAPS_OK, "connect: %s", rdmaps_last_error());
  const float g[4] = {1, 2, 3, NAN};
  CHECK(rdmaps_client_push(client, "w", g, 4) == RDMAPS_OK, "push: %s", rdmaps_last_error());
  alarm(30); /* a hang ends as SIGALRM */
  pthread_join(thread, NULL);
  alarm(0);
  rdmaps_set_log_callback(take_log, g_log);
  CHECK(g_destroyed_in_callback == 1, "the callback never destroyed the server");
  rdmaps_client_destroy(client); /* its server gone: it leaves at once */
}

/* A client destroyed from the log callback of its own call (a watchdog that
 * gives up at "reconnecting"): the destroy waited for that call, on its own
 * thread, for good. It ends the call instead. */
static rdmaps_client* g_doomed;
static int g_doomed_destroyed;
static void destroy_client_in_callback(rdmaps_log_level level, const char* line, void* user) {
  (void)level, (void)user;
  if (!g_doomed_destroyed && strstr(line, "reconnecting")) {
    g_doomed_destroyed = 1;
    rdmaps_client_destroy(g_doomed);
  }
}
static void destroy_a_client_from_its_own_calls_log_line(void) {
  pthread_t thread;
  char address[64];
  rdmaps_server* server = start_tcp_server("--transport tcp", &thread, address);
  if (!server) return;
  rdmaps_client_options co = {address, 0, "--transport tcp --reconnect 2", 5000};
  CHECK(rdmaps_client_create(&co, &g_doomed) == RDMAPS_OK && rdmaps_client_declare(g_doomed, "w", 4) == RDMAPS_OK &&
            rdmaps_client_connect(g_doomed) == RDMAPS_OK,
        "client: %s", rdmaps_last_error());
  rdmaps_server_stop(server);
  pthread_join(thread, NULL);
  rdmaps_server_destroy(server);
  rdmaps_set_log_callback(destroy_client_in_callback, NULL);
  alarm(30); /* a hang ends as SIGALRM */
  /* One call only: the client is gone once the callback destroyed it. */
  float w[4];
  const rdmaps_status st = rdmaps_client_pull(g_doomed, "w", w, 4);
  alarm(0);
  rdmaps_set_log_callback(take_log, g_log);
  CHECK(g_doomed_destroyed == 1, "no 'reconnecting' line came to destroy the client at (pull gave %s)",
        rdmaps_status_name(st));
  if (!g_doomed_destroyed) rdmaps_client_destroy(g_doomed);
  CHECK(st != RDMAPS_OK, "a pull from a stopped server whose client was destroyed passed");
}

/* A refusal says whether a later connect may pass: all were
 * RDMAPS_ERR_PROTOCOL, a server out of memory for now like a worker of
 * another table. */
static void refusals_say_whether_a_retry_may_pass(void) {
  pthread_t thread;
  char address[64];
  rdmaps_server* server = start_tcp_server("--transport tcp", &thread, address);
  if (!server) return;
  rdmaps_client* clients[3] = {NULL, NULL, NULL};
  const uint32_t ids[3] = {0, 0, 1};
  for (int i = 0; i < 3; ++i) {
    rdmaps_client_options co = {address, ids[i], "--transport tcp", 10000};
    CHECK(rdmaps_client_create(&co, &clients[i]) == RDMAPS_OK, "client: %s", rdmaps_last_error());
    if (clients[i]) CHECK(rdmaps_client_declare(clients[i], "w", 4) == RDMAPS_OK, "declare: %s", rdmaps_last_error());
  }
  CHECK(rdmaps_client_connect(clients[0]) == RDMAPS_OK, "connect: %s", rdmaps_last_error());
  /* Its id still connected: held 3 s, then refused for now. */
  rdmaps_status st = rdmaps_client_connect(clients[1]);
  CHECK(st == RDMAPS_ERR_REFUSED_FOR_NOW && strcmp(rdmaps_status_name(st), "refused-for-now") == 0 &&
            strstr(rdmaps_last_error(), "already connected") != NULL,
        "a worker id already connected gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  /* With a timeout shorter than that hold it heard nothing: the timeout says why. */
  rdmaps_client_options brief = {address, 0, "--transport tcp", 2000};
  rdmaps_client* hasty = NULL;
  CHECK(rdmaps_client_create(&brief, &hasty) == RDMAPS_OK && rdmaps_client_declare(hasty, "w", 4) == RDMAPS_OK,
        "client: %s", rdmaps_last_error());
  st = rdmaps_client_connect(hasty);
  CHECK(st == RDMAPS_ERR_TIMEOUT && strstr(rdmaps_last_error(), "is that worker id in use by another process?") != NULL,
        "a worker id already connected, with a 2 s timeout, gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  rdmaps_client_destroy(hasty);
  /* An id past the server's workers: for good. */
  st = rdmaps_client_connect(clients[2]);
  CHECK(st == RDMAPS_ERR_PROTOCOL && strstr(rdmaps_last_error(), "refused worker 1") != NULL,
        "a worker id past the server's gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  for (int i = 2; i >= 0; --i) rdmaps_client_destroy(clients[i]); /* worker 0 last: the run returns */
  pthread_join(thread, NULL);
  rdmaps_server_destroy(server);
}

/* A one-shot callback that removes itself (it used to wait for the lock its
 * own call held, for good). */
static int g_once_calls;
static void log_once(rdmaps_log_level level, const char* line, void* user) {
  (void)level, (void)line, (void)user;
  ++g_once_calls;
  rdmaps_set_log_callback(NULL, NULL);
}
static void callback_that_removes_itself(void) {
  rdmaps_set_log_callback(log_once, NULL);
  pthread_t thread;
  char address[64];
  rdmaps_server* server = start_tcp_server("--transport tcp", &thread, address);
  if (!server) return;
  rdmaps_client_options co = {address, 0, "--transport tcp", 10000};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  CHECK(rdmaps_client_declare(client, "w", 4) == RDMAPS_OK, "declare: %s", rdmaps_last_error());
  CHECK(rdmaps_client_connect(client) == RDMAPS_OK, "connect: %s", rdmaps_last_error());
  rdmaps_client_destroy(client); /* the server logs "left" and its run returns */
  pthread_join(thread, NULL);
  rdmaps_server_destroy(server);
  CHECK(g_once_calls == 1, "the one-shot log callback ran %d times", g_once_calls);
}

/* Options past their range, a quote never closed, a buffer too small, a
 * connect() after the server was lost: each named, nothing made. */
static void edges(void) {
  rdmaps_server* none = NULL;
  rdmaps_server_options insecure2 = {"127.0.0.1:0", 0, 1, 1, "--transport tcp", 2, 0};
  CHECK(rdmaps_server_create(&insecure2, &none) == RDMAPS_ERR_INVALID_ARGUMENT && !none &&
            strstr(rdmaps_last_error(), "options.insecure is 2: 0 or 1"),
        "insecure 2: %s", rdmaps_last_error());
  rdmaps_server_options many = {"127.0.0.1:0", 0, 0xFFFFFFFFu, 1, "--transport tcp", 0, 0};
  CHECK(rdmaps_server_create(&many, &none) == RDMAPS_ERR_INVALID_ARGUMENT && !none &&
            strstr(rdmaps_last_error(), "a job has 1 to 4096 servers, not 4294967295"),
        "4294967295 servers: %s", rdmaps_last_error());
  rdmaps_server_options open_quote = {"127.0.0.1:0", 0, 1, 1, "--transport tcp --checkpoint-dir '/tmp/a b", 0, 0};
  CHECK(rdmaps_server_create(&open_quote, &none) == RDMAPS_ERR_INVALID_ARGUMENT && !none &&
            strstr(rdmaps_last_error(), "config: the ' at offset 33 is never closed"),
        "a quote never closed: %s", rdmaps_last_error());

  rdmaps_server_options empty_metrics = {"127.0.0.1:0", 0, 1, 1, "--transport tcp --metrics ''", 0, 0};
  CHECK(rdmaps_server_create(&empty_metrics, &none) == RDMAPS_ERR_INVALID_ARGUMENT && !none &&
            strstr(rdmaps_last_error(), "--metrics needs HOST:PORT"),
        "--metrics '': %s", rdmaps_last_error());
  rdmaps_server_options metered_server = {"127.0.0.1:0", 0, 1, 1, "--transport tcp --metrics 127.0.0.1:0", 0, 0};
  rdmaps_server* metered = NULL;
  char metrics_at[128];
  CHECK(rdmaps_server_create(&metered_server, &metered) == RDMAPS_OK &&
            rdmaps_server_metrics_address(metered, metrics_at, sizeof(metrics_at)) == RDMAPS_OK &&
            strncmp(metrics_at, "127.0.0.1:", 10) == 0 && atoi(metrics_at + 10) > 0,
        "server metrics address: '%s' %s", metrics_at, rdmaps_last_error());
  rdmaps_server_destroy(metered);
  /* In double quotes a backslash takes a quote or a backslash, and stays before anything else, as in a shell. */
  char parent[] = "/tmp/rdmaps c abi quotes XXXXXX";
  CHECK(mkdtemp(parent) != NULL, "mkdtemp failed");
  char quoted[512], made[512];
  snprintf(quoted, sizeof(quoted), "--transport tcp --checkpoint-dir \"%s/a \\\"b\\\" \\c\"", parent);
  snprintf(made, sizeof(made), "%s/a \"b\" \\c", parent);
  rdmaps_server_options in_quotes = {"127.0.0.1:0", 0, 1, 1, quoted, 0, 0};
  CHECK(rdmaps_server_create(&in_quotes, &none) == RDMAPS_OK, "%s: %s", quoted, rdmaps_last_error());
  rdmaps_server_destroy(none);
  none = NULL;
  struct stat made_stat;
  CHECK(stat(made, &made_stat) == 0 && S_ISDIR(made_stat.st_mode), "%s did not make the directory '%s'", quoted, made);
  char rm[1200];
  snprintf(rm, sizeof(rm), "rm -rf '%s'", parent);
  CHECK(system(rm) == 0, "removing %s", parent);

  rdmaps_server_options so = {"127.0.0.1:0", 0, 1, 1, "--transport tcp --lr 0.5", 0, 0};
  rdmaps_server* server = NULL;
  CHECK(rdmaps_server_create(&so, &server) == RDMAPS_OK, "server: %s", rdmaps_last_error());
  if (!server) return;
  char small[5] = {'X', 'X', 'X', 'X', 'X'}, address[128];
  CHECK(rdmaps_server_address(server, small, sizeof(small)) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "a buffer of 5 bytes is too small") &&
            strstr(rdmaps_last_error(), "bytes with its NUL"),
        "address into 5 bytes: %s", rdmaps_last_error());
  CHECK(small[0] == '\0', "a refused address left the buffer's old text, not an empty string");
  rdmaps_server_address(server, address, sizeof(address));
  pthread_t thread;
  pthread_create(&thread, NULL, serve, server);
  rdmaps_client_options co = {address, 0, "--transport tcp", 5000};
  rdmaps_client* client = NULL;
  CHECK(rdmaps_client_create(&co, &client) == RDMAPS_OK, "client: %s", rdmaps_last_error());
  float w[10] = {0};
  CHECK(client && rdmaps_client_declare(client, "w", 10) == RDMAPS_OK && rdmaps_client_connect(client) == RDMAPS_OK &&
            rdmaps_client_connect(client) == RDMAPS_OK,
        "connect, twice: %s", rdmaps_last_error());
  if (!client) return;
  const char* names[] = {"w"};
  float* outs[] = {w};
  const size_t sizes[] = {10};
  CHECK(rdmaps_client_pull_many(client, (size_t)1 << 31, names, outs, sizes) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "count 2147483648 is not the length of the arrays"),
        "pull_many of 2^31 tensors: %s", rdmaps_last_error());
  rdmaps_server_stop(server);
  pthread_join(thread, NULL);
  rdmaps_server_destroy(server);
  CHECK(rdmaps_client_pull(client, "w", w, 10) != RDMAPS_OK, "a pull from a destroyed server succeeded");
  rdmaps_status st = rdmaps_client_connect(client);
  CHECK(st == RDMAPS_ERR_PEER_GONE && strstr(rdmaps_last_error(), "was lost after this client connected"),
        "connect after the server was lost gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  rdmaps_client_destroy(client);
}

int main(void) {
  rdmaps_set_log_callback(take_log, g_log);
  CHECK(rdmaps_set_log_level((rdmaps_log_level)7) == RDMAPS_ERR_INVALID_ARGUMENT, "log level 7 accepted");
  CHECK(strstr(rdmaps_last_error(), "rdmaps_set_log_level: 7 is not a log level") != NULL, "log level 7: %s",
        rdmaps_last_error());
  CHECK(rdmaps_set_log_level(RDMAPS_LOG_INFO) == RDMAPS_OK, "log level: %s", rdmaps_last_error());
  unsetenv("RDMAPS_SECRET"); /* this test runs without a secret, on loopback */
  unsetenv("RDMAPS_SECRET_FILE");
  /* Off loopback, no secret: refused, naming the way out; with insecure set: serves. */
  rdmaps_server_options open_to_all = {"0.0.0.0:0", 0, 1, 1, "--transport tcp", 0, 0};
  rdmaps_server* refused = NULL;
  rdmaps_status st0 = rdmaps_server_create(&open_to_all, &refused);
  CHECK(st0 == RDMAPS_ERR_INVALID_ARGUMENT && refused == NULL, "a server without a secret on 0.0.0.0 gave %s",
        rdmaps_status_name(st0));
  CHECK(strstr(rdmaps_last_error(), "the insecure option") != NULL, "message does not name the insecure option: %s",
        rdmaps_last_error());
  open_to_all.insecure = 1;
  CHECK(rdmaps_server_create(&open_to_all, &refused) == RDMAPS_OK, "insecure server: %s", rdmaps_last_error());
  rdmaps_server_destroy(refused);

  /* RDMAPS_METRICS serves metrics as it does for the programs (set but empty: refused, naming it);
   * --rule-from-workers is a server's flag, refused to a worker. */
  setenv("RDMAPS_METRICS", "127.0.0.1:0", 1);
  rdmaps_server_options adopting = {"127.0.0.1:0", 0, 1, 1, "--transport tcp --rule-from-workers", 0, 0};
  rdmaps_server* adopter = NULL;
  CHECK(rdmaps_server_create(&adopting, &adopter) == RDMAPS_OK, "--rule-from-workers: %s", rdmaps_last_error());
  char metrics_at[128] = "";
  CHECK(adopter && rdmaps_server_metrics_address(adopter, metrics_at, sizeof(metrics_at)) == RDMAPS_OK &&
            strncmp(metrics_at, "127.0.0.1:", 10) == 0,
        "RDMAPS_METRICS gave no metrics endpoint: '%s'", metrics_at);
  /* A worker of the same process reads the variable too: its port is the server's, and the error names
   * the variable the user set, not a --metrics never given. */
  setenv("RDMAPS_METRICS", metrics_at, 1);
  rdmaps_client_options same_port = {"127.0.0.1:1", 0, "--transport tcp", 0};
  rdmaps_client* same_port_worker = NULL;
  char in_use[160];
  snprintf(in_use, sizeof(in_use), "RDMAPS_METRICS %s: cannot listen there", metrics_at);
  CHECK(rdmaps_client_create(&same_port, &same_port_worker) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), in_use) != NULL && strstr(rdmaps_last_error(), "--metrics in its config"),
        "a worker on the server's RDMAPS_METRICS port: %s", rdmaps_last_error());
  rdmaps_server_destroy(adopter);
  setenv("RDMAPS_METRICS", "", 1);
  adopter = NULL;
  CHECK(rdmaps_server_create(&adopting, &adopter) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "RDMAPS_METRICS is set but empty") != NULL,
        "an empty RDMAPS_METRICS: %s", rdmaps_last_error());
  unsetenv("RDMAPS_METRICS");
  /* Spelled as the programs take a switch ("on" after it was an unknown flag); a value that is none is named. */
  const char* spellings[] = {"--rule-from-workers on", "--rule-from-workers=off", "--rule-from-workers 0 --lr 0.5"};
  for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); ++i) {
    rdmaps_server_options spelled = {"127.0.0.1:0", 0, 1, 1, spellings[i], 0, 0};
    rdmaps_server* taken = NULL;
    CHECK(rdmaps_server_create(&spelled, &taken) == RDMAPS_OK, "'%s': %s", spellings[i], rdmaps_last_error());
    rdmaps_server_destroy(taken);
  }
  rdmaps_server_options maybe = {"127.0.0.1:0", 0, 1, 1, "--rule-from-workers=maybe", 0, 0};
  rdmaps_server* not_made = NULL;
  CHECK(rdmaps_server_create(&maybe, &not_made) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "--rule-from-workers: 'maybe' is not on or off") != NULL,
        "--rule-from-workers=maybe: %s", rdmaps_last_error());
  rdmaps_client_options adopting_worker = {"127.0.0.1:1", 0, "--rule-from-workers", 0};
  rdmaps_client* refused_worker = NULL;
  CHECK(rdmaps_client_create(&adopting_worker, &refused_worker) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "--rule-from-workers is a server's flag") != NULL,
        "a worker's --rule-from-workers: %s", rdmaps_last_error());

  rdmaps_server_options so = {"127.0.0.1:0", 0, 1, 1, "--transport shm --lr 0.5", 0, 0};
  rdmaps_server* server = NULL;
  rdmaps_status st = rdmaps_server_create(&so, &server);
  CHECK(st == RDMAPS_OK, "server_create: %s", rdmaps_last_error());
  if (st != RDMAPS_OK) return 1;
  char address[128];
  CHECK(rdmaps_server_address(server, address, sizeof(address)) == RDMAPS_OK, "address: %s", rdmaps_last_error());
  pthread_t thread;
  pthread_create(&thread, NULL, serve, server);

  /* Bad options fail with a status and a message, and create nothing. */
  rdmaps_client* bad = (rdmaps_client*)1;
  rdmaps_client_options wrong = {address, 0, "--staleness soon", 0};
  st = rdmaps_client_create(&wrong, &bad);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT, "bad config gave %s", rdmaps_status_name(st));
  CHECK(bad == NULL, "a failed create left a handle");
  CHECK(strstr(rdmaps_last_error(), "--staleness") != NULL, "message does not name the flag: %s", rdmaps_last_error());
  /* A worker id from the environment past what a server serves is refused, not wrapped to worker 0. */
  rdmaps_client_options from_env = {address, -1, "--transport shm", 0};
  const char* ids[] = {"4294967296", "99999999999999999999", "-1", "7x"};
  for (int i = 0; i < 4; ++i) {
    setenv("RDMAPS_WORKER", ids[i], 1);
    bad = (rdmaps_client*)1;
    st = rdmaps_client_create(&from_env, &bad);
    CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL, "RDMAPS_WORKER=%s gave %s", ids[i], rdmaps_status_name(st));
  }
  /* Decimal digits only, and a range error names the variable. */
  const char* spelled[] = {" 5", "+5", "0x5"};
  for (int i = 0; i < 3; ++i) {
    setenv("RDMAPS_WORKER", spelled[i], 1);
    bad = (rdmaps_client*)1;
    st = rdmaps_client_create(&from_env, &bad);
    CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL &&
              strstr(rdmaps_last_error(), "is not a non-negative integer"),
          "RDMAPS_WORKER='%s' gave %s: %s", spelled[i], rdmaps_status_name(st), rdmaps_last_error());
  }
  setenv("RDMAPS_WORKER", "5000", 1);
  st = rdmaps_client_create(&from_env, &bad);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "RDMAPS_WORKER=5000 is not below 4096"),
        "RDMAPS_WORKER=5000 gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  unsetenv("RDMAPS_WORKER");
  /* A negative id other than -1 is named, not taken as "from RDMAPS_WORKER". */
  rdmaps_client_options minus_two = {address, -2, "--transport shm", 0};
  bad = (rdmaps_client*)1;
  st = rdmaps_client_create(&minus_two, &bad);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL && strstr(rdmaps_last_error(), "options.worker is -2"),
        "worker -2 gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  /* Malformed entries are refused at create, naming the entry (they failed only at connect). */
  const char* lists[] = {"127.0.0.1:1 ", "127.0.0.1:1, 127.0.0.1:2", "127.0.0.1:99999", "127.0.0.1",
                         "127.0.0.1:0",  "127.0.0.1:1,127.0.0.1:01"};
  for (int i = 0; i < 6; ++i) {
    rdmaps_client_options malformed = {lists[i], 0, "--transport shm", 0};
    bad = (rdmaps_client*)1;
    st = rdmaps_client_create(&malformed, &bad);
    CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL && strstr(rdmaps_last_error(), "entry "),
          "servers '%s' gave %s: %s", lists[i], rdmaps_status_name(st), rdmaps_last_error());
  }
  /* An empty entry is named, not dropped (the list named other servers than the job's), and an error
   * names where the list came from. */
  const char* holes[] = {"127.0.0.1:5000,,127.0.0.1:5001", "127.0.0.1:5000,", ","};
  const char* empty_entry[] = {"entry 2 is empty", "entry 2 is empty", "entry 1 is empty"};
  for (int i = 0; i < 3; ++i) {
    rdmaps_client_options holed = {holes[i], 0, "--transport shm", 0};
    bad = (rdmaps_client*)1;
    st = rdmaps_client_create(&holed, &bad);
    CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL && strstr(rdmaps_last_error(), empty_entry[i]) &&
              strstr(rdmaps_last_error(), "options.servers="),
          "servers '%s' gave %s: %s", holes[i], rdmaps_status_name(st), rdmaps_last_error());
  }
  rdmaps_client_options from_servers_env = {NULL, 0, "--transport shm", 0};
  setenv("RDMAPS_SERVERS", "127.0.0.1:99999", 1);
  bad = (rdmaps_client*)1;
  st = rdmaps_client_create(&from_servers_env, &bad);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL &&
            strstr(rdmaps_last_error(), "RDMAPS_SERVERS entry 1 '127.0.0.1:99999'"),
        "RDMAPS_SERVERS=127.0.0.1:99999 gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  setenv("RDMAPS_SERVERS", "", 1); /* set but empty is unset */
  st = rdmaps_client_create(&from_servers_env, &bad);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "no servers"), "RDMAPS_SERVERS='' gave %s: %s",
        rdmaps_status_name(st), rdmaps_last_error());
  unsetenv("RDMAPS_SERVERS");
  /* The same server twice is refused at once, not by the server as a worker already connected. */
  char twice[300];
  snprintf(twice, sizeof(twice), "%s,%s", address, address);
  rdmaps_client_options doubled = {twice, 0, "--transport shm", 0};
  bad = (rdmaps_client*)1;
  st = rdmaps_client_create(&doubled, &bad);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL && strstr(rdmaps_last_error(), "listed twice"),
        "a server listed twice gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());

  /* --metrics=HOST:PORT as every other --flag=value (it was an unknown flag), and empty: named. */
  rdmaps_client_options with_metrics = {address, 0, "--transport shm --metrics=127.0.0.1:0", 0};
  rdmaps_client* metered = NULL;
  CHECK(rdmaps_client_create(&with_metrics, &metered) == RDMAPS_OK, "--metrics=: %s", rdmaps_last_error());
  /* Port 0: the real one, which a C caller had no way to learn. */
  char served[128], tiny[4];
  CHECK(rdmaps_client_metrics_address(metered, served, sizeof(served)) == RDMAPS_OK &&
            strncmp(served, "127.0.0.1:", 10) == 0 && atoi(served + 10) > 0,
        "client metrics address: '%s' %s", served, rdmaps_last_error());
  CHECK(rdmaps_client_metrics_address(metered, tiny, sizeof(tiny)) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "too small for the metrics address"),
        "a small buffer: %s", rdmaps_last_error());
  rdmaps_client_destroy(metered);
  rdmaps_client_options unmetered = {address, 0, "--transport shm", 0};
  CHECK(rdmaps_client_create(&unmetered, &metered) == RDMAPS_OK, "%s", rdmaps_last_error());
  CHECK(rdmaps_client_metrics_address(metered, served, sizeof(served)) == RDMAPS_OK && served[0] == '\0',
        "no --metrics: '%s'", served);
  rdmaps_client_destroy(metered);
  rdmaps_client_options no_metrics = {address, 0, "--transport shm --metrics=", 0};
  bad = (rdmaps_client*)1;
  CHECK(rdmaps_client_create(&no_metrics, &bad) == RDMAPS_ERR_INVALID_ARGUMENT && bad == NULL &&
            strstr(rdmaps_last_error(), "--metrics= needs HOST:PORT"),
        "an empty --metrics=: %s", rdmaps_last_error());

  rdmaps_client_options co = {address, 0, "--transport shm --put-landing on", 0};
  rdmaps_client* client = NULL;
  st = rdmaps_client_create(&co, &client);
  CHECK(st == RDMAPS_OK, "client_create: %s", rdmaps_last_error());
  static char long_name[5000];
  memset(long_name, 'n', sizeof(long_name) - 1);
  CHECK(rdmaps_client_declare(client, long_name, 10) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "longer than the 4096"),
        "a 4999-byte name: %s", rdmaps_last_error());
  CHECK(rdmaps_client_declare(client, "huge", SIZE_MAX) == RDMAPS_ERR_INVALID_ARGUMENT &&
            strstr(rdmaps_last_error(), "'huge'") && strstr(rdmaps_last_error(), "1099511627776 per tensor"),
        "a tensor of SIZE_MAX floats: %s", rdmaps_last_error());
  CHECK(rdmaps_client_barrier(client) == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "barrier"),
        "barrier before connect: %s", rdmaps_last_error());
  CHECK(rdmaps_client_declare(client, "w", 1000) == RDMAPS_OK, "declare: %s", rdmaps_last_error());
  CHECK(rdmaps_client_declare(client, "b", 10) == RDMAPS_OK, "declare: %s", rdmaps_last_error());
  CHECK(rdmaps_client_connect(client) == RDMAPS_OK, "connect: %s", rdmaps_last_error());

  float w[1000], g[1000];
  for (int i = 0; i < 1000; ++i) w[i] = 1.0f, g[i] = 1.0f;
  CHECK(rdmaps_client_init(client, "w", w, 1000) == RDMAPS_OK, "init: %s", rdmaps_last_error());
  CHECK(rdmaps_client_push(client, "w", g, 1000) == RDMAPS_OK, "push: %s", rdmaps_last_error());
  CHECK(rdmaps_client_clock(client) == RDMAPS_OK, "clock: %s", rdmaps_last_error());
  CHECK(rdmaps_client_pull(client, "w", w, 1000) == RDMAPS_OK, "pull: %s", rdmaps_last_error());
  CHECK(w[0] == 0.5f && w[999] == 0.5f, "one SGD step with lr 0.5 should give 0.5, got %f", w[0]);
  CHECK(rdmaps_client_set_learning_rate(client, -1.0f) == RDMAPS_ERR_INVALID_ARGUMENT, "negative rate accepted");
  CHECK(rdmaps_client_set_learning_rate(client, 0.125f) == RDMAPS_OK, "set rate: %s", rdmaps_last_error());
  CHECK(rdmaps_client_push(client, "w", g, 1000) == RDMAPS_OK, "push: %s", rdmaps_last_error());
  CHECK(rdmaps_client_clock(client) == RDMAPS_OK, "clock: %s", rdmaps_last_error());
  CHECK(rdmaps_client_pull(client, "w", w, 1000) == RDMAPS_OK, "pull: %s", rdmaps_last_error());
  CHECK(w[0] == 0.375f && w[999] == 0.375f, "a push at the worker's rate 0.125 should give 0.375, got %f", w[0]);
  /* A rate of 0 moves nothing; then the servers' 0.5 again (one push, and one back). */
  CHECK(rdmaps_client_set_learning_rate(client, 0.0f) == RDMAPS_OK, "set rate 0: %s", rdmaps_last_error());
  CHECK(rdmaps_client_push(client, "w", g, 1000) == RDMAPS_OK && rdmaps_client_clock(client) == RDMAPS_OK &&
            rdmaps_client_pull(client, "w", w, 1000) == RDMAPS_OK && w[0] == 0.375f && w[999] == 0.375f,
        "a push at rate 0 should leave 0.375, got %f (%s)", w[0], rdmaps_last_error());
  CHECK(rdmaps_client_use_server_learning_rate(client) == RDMAPS_OK, "servers' rate: %s", rdmaps_last_error());
  CHECK(rdmaps_client_push(client, "w", g, 1000) == RDMAPS_OK && rdmaps_client_clock(client) == RDMAPS_OK &&
            rdmaps_client_pull(client, "w", w, 1000) == RDMAPS_OK && w[0] == -0.125f && w[999] == -0.125f,
        "a push at the servers' 0.5 should give -0.125, got %f (%s)", w[0], rdmaps_last_error());
  for (int i = 0; i < 1000; ++i) g[i] = -1.0f;
  CHECK(rdmaps_client_push(client, "w", g, 1000) == RDMAPS_OK && rdmaps_client_clock(client) == RDMAPS_OK &&
            rdmaps_client_pull(client, "w", w, 1000) == RDMAPS_OK && w[0] == 0.375f,
        "back to 0.375: %f (%s)", w[0], rdmaps_last_error());
  CHECK(rdmaps_client_use_server_learning_rate(NULL) == RDMAPS_ERR_INVALID_ARGUMENT, "NULL client accepted");
  /* Both tensors in one batched pull. */
  float b[10];
  for (int i = 0; i < 10; ++i) b[i] = 2.0f;
  CHECK(rdmaps_client_init(client, "b", b, 10) == RDMAPS_OK, "init: %s", rdmaps_last_error());
  for (int i = 0; i < 10; ++i) b[i] = 0.0f, w[i] = 0.0f;
  const char* names[] = {"w", "b"};
  float* outs[] = {w, b};
  const size_t sizes[] = {1000, 10};
  CHECK(rdmaps_client_pull_many(client, 2, names, outs, sizes) == RDMAPS_OK, "pull_many: %s", rdmaps_last_error());
  CHECK(w[0] == 0.375f && b[0] == 2.0f && b[9] == 2.0f, "pull_many gave w %f, b %f", w[0], b[0]);
  /* Registered after connecting: the lanes take it in turn, and pulls are put into it. */
  static float late[1000];
  CHECK(rdmaps_client_register_memory(client, late, 1000) == RDMAPS_OK &&
            rdmaps_client_pull(client, "w", late, 1000) == RDMAPS_OK && late[0] == 0.375f && late[999] == 0.375f,
        "pull into memory registered after connecting: %s, late[0] %f", rdmaps_last_error(), late[0]);
  const size_t wrong_sizes[] = {1000, 11};
  st = rdmaps_client_pull_many(client, 2, names, outs, wrong_sizes);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "'b'"), "pull_many of a wrong size: %s",
        rdmaps_last_error());
  CHECK(rdmaps_client_pull_many(client, 2, NULL, outs, sizes) == RDMAPS_ERR_INVALID_ARGUMENT, "NULL names accepted");
  /* The argument that is NULL is named, not a list of those that might be. */
#define CHECK_NAMES_NULL(call, text) \
  CHECK((call) == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), text), "%s: %s", text, rdmaps_last_error())
  const char* null_name[] = {"w", NULL};
  CHECK_NAMES_NULL(rdmaps_client_push(client, "w", NULL, 1000), "rdmaps_client_push: gradient is NULL");
  CHECK_NAMES_NULL(rdmaps_client_push(client, NULL, g, 1000), "rdmaps_client_push: name is NULL");
  CHECK_NAMES_NULL(rdmaps_client_init(client, "w", NULL, 1000), "rdmaps_client_init: values is NULL");
  CHECK_NAMES_NULL(rdmaps_client_pull(client, "w", NULL, 1000), "rdmaps_client_pull: out is NULL");
  CHECK_NAMES_NULL(rdmaps_client_pull_many(client, 2, names, outs, NULL), "rdmaps_client_pull_many: floats is NULL");
  CHECK_NAMES_NULL(rdmaps_client_pull_many(client, 2, null_name, outs, sizes),
                   "rdmaps_client_pull_many: names[1] is NULL");
  CHECK_NAMES_NULL(rdmaps_client_get_stats(client, NULL), "rdmaps_client_get_stats: out is NULL");
#undef CHECK_NAMES_NULL
  st = rdmaps_client_pull_many(client, SIZE_MAX, names, outs, sizes);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "rdmaps_client_pull_many") &&
            strstr(rdmaps_last_error(), "count"),
        "pull_many of SIZE_MAX tensors gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());

  st = rdmaps_client_push(client, "w", g, 999);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT, "wrong size gave %s", rdmaps_status_name(st));
  CHECK(strstr(rdmaps_last_error(), "'w'") != NULL, "message does not name the tensor: %s", rdmaps_last_error());
  st = rdmaps_client_pull(client, "nope", w, 1000);
  CHECK(st == RDMAPS_ERR_INVALID_ARGUMENT && strstr(rdmaps_last_error(), "nope"), "unknown tensor: %s",
        rdmaps_last_error());
  CHECK(rdmaps_client_push(NULL, "w", g, 1000) == RDMAPS_ERR_INVALID_ARGUMENT, "NULL client accepted");

  rdmaps_client_stats cs;
  CHECK(rdmaps_client_get_stats(client, &cs) == RDMAPS_OK, "client stats: %s", rdmaps_last_error());
  CHECK(cs.pushes == 5 && cs.clock == 5 && cs.pulls == 7, "client stats: %llu pushes, clock %llu, %llu pulls",
        (unsigned long long)cs.pushes, (unsigned long long)cs.clock, (unsigned long long)cs.pulls);
  /* After an interrupt (from any thread) every call is cancelled; destroy still says bye. */
  CHECK(rdmaps_client_interrupt(NULL) == RDMAPS_ERR_INVALID_ARGUMENT, "NULL client interrupted");
  CHECK(rdmaps_client_interrupt(client) == RDMAPS_OK, "interrupt: %s", rdmaps_last_error());
  st = rdmaps_client_clock(client);
  CHECK(st == RDMAPS_ERR_CANCELLED && strcmp(rdmaps_status_name(st), "cancelled") == 0 &&
            strstr(rdmaps_last_error(), "interrupt"),
        "a clock after interrupt gave %s: %s", rdmaps_status_name(st), rdmaps_last_error());
  /* As the header says: the counters still answer. */
  CHECK(rdmaps_client_get_stats(client, &cs) == RDMAPS_OK && cs.clock == 5, "stats after interrupt: %s",
        rdmaps_last_error());
  uint64_t rejected_after = 1;
  CHECK(rdmaps_client_messages_rejected(client, &rejected_after) == RDMAPS_OK && rejected_after == 0,
        "messages_rejected after interrupt: %s", rdmaps_last_error());
  rdmaps_client_destroy(client); /* says bye: the server's run() returns */
  pthread_join(thread, NULL);

  rdmaps_server_stats ss;
  CHECK(rdmaps_server_get_stats(server, &ss) == RDMAPS_OK, "server stats: %s", rdmaps_last_error());
  CHECK(ss.pushes == 5 && ss.clocks == 5 && ss.rejected == 0, "server stats: %llu pushes, %llu clocks, %llu rejected",
        (unsigned long long)ss.pushes, (unsigned long long)ss.clocks, (unsigned long long)ss.rejected);
  rdmaps_server_destroy(server);
  /* Every library line came through the callback: the worker's joining and leaving among them. */
  CHECK(g_log_lines > 0 && !g_log_bad_level, "log callback: %d lines, bad level %d", g_log_lines, g_log_bad_level);
  CHECK(strstr(g_log, "connected, push path") != NULL && strstr(g_log, "left") != NULL,
        "the log callback missed the worker's connection: %s", g_log);
  rdmaps_set_log_callback(NULL, NULL);
  CHECK(strcmp(rdmaps_status_name(RDMAPS_ERR_TIMEOUT), "timeout") == 0, "status names");
  rejected_push_is_counted();
  restart_from_checkpoint();
  final_checkpoint_failure();
  destroy_while_running();
  destroy_from_the_log_callback();
  destroy_a_client_from_its_own_calls_log_line();
  callback_that_removes_itself();
  forked_child_leaves_the_server_alone();
  refusals_say_whether_a_retry_may_pass();
  edges();
  printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
  return failures ? 1 : 0;
}
