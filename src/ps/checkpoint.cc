#include "src/ps/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>

#include "rdmaps/error.h"
#include "transport/auth.h"
#include "transport/wire.h"

namespace rdmaps::ps {

using transport::WireReader;
using transport::WireWriter;

namespace {
constexpr char kMagic[8] = {'R', 'D', 'M', 'A', 'P', 'S', 'C', 'K'};
constexpr uint32_t kFormatVersion = kCheckpointFormat;
// Read still: without the earlier job's number, the state origins and the job (1), or the job (2).
constexpr uint32_t kOldestFormatVersion = 1;
constexpr size_t kDigestBytes = 32;
constexpr size_t kMaxHeaderBytes = 64u << 20;  // a Hello's table (16 MiB) plus versions and workers

// kInvalidArgument: a directory a server cannot use is its configuration's
// fault; kIo where a checkpoint could not be read (nothing says it is damaged).
[[noreturn]] void io_error(const std::string& what, const std::string& path, Errc code = Errc::kInvalidArgument) {
  throw Error(code, what + " '" + path + "': " + std::strerror(errno));
}

// Makes `dir` (mode 700) where it is missing, its entry synced into its
// parent: a checkpoint synced into a directory that a crash then loses is
// lost with it. The parent's sync is best effort (a parent this user may
// search but not read cannot be opened).
void make_dir(const std::string& dir, const std::string& what) {
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST) io_error(what, dir);
    return;
  }
  std::string trimmed = dir;  // "ckpt/": its parent is ".", not "ckpt"
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  std::string parent = std::filesystem::path(trimmed).parent_path().string();
  if (parent.empty()) parent = ".";
  if (const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Its own file descriptor, closed on every path out.
class File {
 public:
  File(const std::string& path, int flags, mode_t mode = 0, Errc code = Errc::kInvalidArgument)
      : path_(path), fd_(::open(path.c_str(), flags, mode)), code_(code) {
    if (fd_ < 0) io_error("cannot open", path, code_);
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  int fd() const { return fd_; }

  void write_all(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      const ssize_t k = ::write(fd_, p, std::min<size_t>(n, 1u << 30));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) io_error("cannot write", path_, code_);
      p += k;
      n -= static_cast<size_t>(k);
    }
  }
  void read_all(void* data, size_t n) {
    auto* p = static_cast<uint8_t*>(data);
    while (n > 0) {
      const ssize_t k = ::read(fd_, p, std::min<size_t>(n, 1u << 30));
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) io_error("cannot read", path_, code_);
      if (k == 0) throw Error(Errc::kInvalidArgument, "'" + path_ + "' ended early (torn)");
      p += k;
      n -= static_cast<size_t>(k);
    }
  }
  void sync() {
    if (::fsync(fd_) != 0) io_error("cannot sync", path_, code_);
  }

 private:
  std::string path_;
  int fd_;
  Errc code_;
};

std::string file_name(uint32_t index, uint64_t sequence) {
  char name[64];
  std::snprintf(name, sizeof(name), "server-%u-%010llu.ckpt", index, static_cast<unsigned long long>(sequence));
  return name;
}

struct FileName {
  uint32_t index;
  uint64_t sequence;
};

// server-INDEX-SEQUENCE.ckpt (or .ckpt.tmp where `temporary`), else none.
std::optional<FileName> parse_file_name(const std::string& name, bool temporary) {
  const std::string prefix = "server-", suffix = temporary ? ".ckpt.tmp" : ".ckpt";
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return std::nullopt;
  const std::string middle = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  const size_t dash = middle.find('-');
  const auto number = [](const std::string& digits, size_t most) -> std::optional<uint64_t> {
    if (digits.empty() || digits.size() > most || !std::all_of(digits.begin(), digits.end(), ::isdigit))
      return std::nullopt;
    return std::stoull(digits);
  };
  if (dash == std::string::npos || (dash > 1 && middle[0] == '0')) return std::nullopt;  // as file_name() spells it
  const auto index = number(middle.substr(0, dash), 9), sequence = number(middle.substr(dash + 1), 19);
  if (!index || !sequence) return std::nullopt;
  return FileName{static_cast<uint32_t>(*index), *sequence};
}

// Calls `each` with every checkpoint file name in `dir` (none where it does not exist).
template <class Each>
void for_each_name(const std::string& dir, Each&& each) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return;
    io_error("cannot list the checkpoint directory", dir);
  }
  while (const dirent* e = ::readdir(d)) each(std::string(e->d_name));
  ::closedir(d);
}

// Files of server `index` in `dir`: (sequence, name), newest first; `temporary` picks *.ckpt.tmp.
std::vector<std::pair<uint64_t, std::string>> list(const std::string& dir, uint32_t index, bool temporary) {
  std::vector<std::pair<uint64_t, std::string>> out;
  for_each_name(dir, [&](const std::string& name) {
    if (const auto parsed = parse_file_name(name, temporary); parsed && parsed->index == index)
      out.emplace_back(parsed->sequence, name);
  });
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

// The format version of `path` where it is a whole checkpoint of a newer
// format than this release reads (its header says so and its SHA-256 holds:
// a damaged version field is damage, not a newer release), else 0. Only a
// regular file is opened, never through a symbolic link: pruning must not
// open a device that carries a checkpoint's name.
uint32_t newer_format(const std::string& path) {
  struct stat st {};
  char head[sizeof(kMagic) + 4];
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<uint64_t>(st.st_size) < sizeof(head) + kDigestBytes)
    return 0;
  try {
    File in(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    in.read_all(head, sizeof(head));
    uint32_t version = 0;
    std::memcpy(&version, head + sizeof(kMagic), sizeof(version));
    if (std::memcmp(head, kMagic, sizeof(kMagic)) != 0 || version <= kFormatVersion) return 0;
    transport::Sha256 digest;
    digest.update(head, sizeof(head));
    std::vector<uint8_t> chunk(1 << 20);
    for (uint64_t left = static_cast<uint64_t>(st.st_size) - sizeof(head) - kDigestBytes; left > 0;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), left));
      in.read_all(chunk.data(), n);
      digest.update(chunk.data(), n);
      left -= n;
    }
    uint8_t stored[kDigestBytes];
    in.read_all(stored, sizeof(stored));
    return std::memcmp(digest.finish().data(), stored, sizeof(stored)) == 0 ? version : 0;
  } catch (const Error&) {
    return 0;  // unreadable: not a checkpoint anyone can vouch for
  }
}

}  // namespace

std::vector<uint8_t> encode_checkpoint_header(const CheckpointHeader& h, uint64_t floats, bool has_state) {
  WireWriter w;
  w.raw(kMagic, sizeof(kMagic));
  w.u32(kFormatVersion);
  w.u32(h.index);
  w.u32(h.servers);
  w.u32(h.shard_floats);
  w.u64(h.staleness);
  h.rule.encode(w);
  w.u32(static_cast<uint32_t>(h.tensors.size()));
  for (const auto& t : h.tensors) {
    w.str(t.name);
    w.u64(t.floats);
  }
  w.u64(h.sequence);
  w.u64(static_cast<uint64_t>(h.unix_ms));
  w.u32(static_cast<uint32_t>(h.versions.size()));
  for (uint64_t v : h.versions) w.u64(v);
  w.u32(static_cast<uint32_t>(h.workers.size()));
  for (const auto& k : h.workers) {
    w.u8(static_cast<uint8_t>(k.state));
    w.u64(k.clock);
    w.u64(k.pushes);
  }
  w.u64(h.earlier_job);
  w.u32(static_cast<uint32_t>(h.state_since.size()));
  for (uint64_t v : h.state_since) w.u64(v);
  w.u64(h.job);
  w.u64(floats);
  w.u8(has_state ? 1 : 0);
  return w.take();
}

uint64_t CheckpointHeader::updates() const {
  uint64_t n = 0;
  for (const auto& w : workers) n += w.pushes;
  return n;
}

bool CheckpointHeader::job_ended() const {
  return std::all_of(workers.begin(), workers.end(),
                     [](const CheckpointWorker& k) { return k.state == WorkerState::kGone; });
}

bool CheckpointHeader::awaits(size_t w) const { return workers[w].state != WorkerState::kGone || job_ended(); }

uint64_t CheckpointHeader::resumed_clock(size_t w) const {
  if (!job_ended()) return workers[w].clock;
  uint64_t furthest = 0;
  for (const auto& k : workers) furthest = std::max(furthest, k.clock);
  return furthest;
}

void CheckpointHeader::resize_workers(size_t count) {
  if (count == workers.size() || count == 0) return;
  uint64_t clock = UINT64_MAX, dropped = 0;
  for (size_t w = 0; w < workers.size(); ++w)
    if (awaits(w)) clock = std::min(clock, resumed_clock(w));
  for (size_t w = count; w < workers.size(); ++w) dropped += workers[w].pushes;
  workers.resize(count);
  for (auto& k : workers) k = {WorkerState::kNever, clock == UINT64_MAX ? 0 : clock, k.pushes};
  workers[0].pushes += dropped;
}

std::string write_checkpoint(const std::string& dir, const CheckpointHeader& header, const FloatRuns& arrays) {
  uint64_t floats = 0;
  for (const auto& run : arrays.params) floats += run.size();
  const bool has_state = !arrays.state.empty();
  const std::string path = dir + "/" + file_name(header.index, header.sequence), temporary = path + ".tmp";
  make_dir(dir, "cannot create the checkpoint directory");
  try {
    File out(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    transport::Sha256 digest;
    auto put = [&](const void* p, size_t n) {
      digest.update(p, n);
      out.write_all(p, n);
    };
    const std::vector<uint8_t> head = encode_checkpoint_header(header, floats, has_state);
    put(head.data(), head.size());
    for (const auto& run : arrays.params) put(run.data(), run.size_bytes());
    for (const auto& run : arrays.state) put(run.data(), run.size_bytes());
    const auto sum = digest.finish();
    out.write_all(sum.data(), sum.size());
    out.sync();
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  // The rename is what makes the checkpoint exist; syncing the directory makes the rename survive a crash.
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temporary.c_str());
    errno = e;
    io_error("cannot rename the checkpoint to", path);
  }
  // A file system that cannot sync a directory (EINVAL: some FUSE and network
  // ones) keeps the rename as it keeps any: failing here counted every
  // checkpoint there failed, though each was in place, and none was pruned.
  File directory(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (::fsync(directory.fd()) != 0 && errno != EINVAL && errno != ENOTSUP) io_error("cannot sync", dir);
  return path;
}

void check_checkpoint_dir(const std::string& dir) {
  make_dir(dir, "cannot create the checkpoint directory (--checkpoint-dir)");
  // Whoever else may write in it can plant checkpoints a --resume loads, or
  // links where the server writes (the files are opened O_NOFOLLOW too).
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_uid != ::geteuid() || (st.st_mode & S_IWOTH))) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(Errc::kInvalidArgument,
                "the checkpoint directory '" + dir + "' (--checkpoint-dir) " +
                    (st.st_uid != ::geteuid() ? "belongs to uid " + std::to_string(st.st_uid) + ", not to this user"
                                              : std::string("has mode ") + mode + ": any user may write in it") +
                    ", who could plant checkpoints a --resume loads; use a directory of your own (mode 700)");
  }
  const std::string probe = dir + "/.rdmaps-write-test";
  try {
    File(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600).write_all("rdmaps\n", 7);
  } catch (const Error&) {
    io_error("cannot write files in the checkpoint directory (--checkpoint-dir)", dir);  // errno: the probe's
  }
  ::unlink(probe.c_str());
}

namespace {
// Opens and locks `path`, writing this process's pid and host into it; throws
// naming the holder when another process has it.
int take_lock(const std::string& path, const std::string& dir, uint32_t index) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) io_error("cannot open the checkpoint directory's lock", path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    char holder[96] = {};
    [[maybe_unused]] const ssize_t n = ::pread(fd, holder, sizeof(holder) - 1, 0);
    ::close(fd);
    if (e != EWOULDBLOCK) {
      errno = e;
      io_error("cannot lock", path);
    }
    // "PID HOST" (a directory on a shared file system may be another node's).
    std::string who(holder);
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    if (const size_t space = who.find(' '); space != std::string::npos) who.replace(space, 1, " on ");
    throw Error(Errc::kInvalidArgument, "another server " + std::to_string(index) +
                                            (who.empty() ? "" : " (pid " + who + ")") + " writes checkpoints to '" +
                                            dir +
                                            "' (--checkpoint-dir): two would overwrite each other's; give each "
                                            "job its own directory");
  }
  char host[64] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  const std::string who = std::to_string(::getpid()) + (host[0] ? std::string(" ") + host : "") + "\n";
  if (::ftruncate(fd, 0) == 0) [[maybe_unused]]
    const ssize_t n = ::pwrite(fd, who.data(), who.size(), 0);
  return fd;
}

// The same file (device and inode) as the one `fd` holds.
bool same_file(int fd, const std::string& path) {
  struct stat held {
  }, named{};
  return ::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
         held.st_ino == named.st_ino;
}

// A forked child that never execs (a DataLoader worker, a helper of the
// trainer) shares each lock's open file description, and a flock goes only
// once every descriptor of it is closed: a child that outlived its server
// held the directory, and the restarted server was refused, naming the dead
// one's pid. The child closes its copies at once (never LOCK_UN: that
// releases the parent's lock too).
class HeldLocks {
 public:
  static HeldLocks& get() {
    // Never destroyed: a lock of a static object may go after it, at exit.
    static HeldLocks* const locks = new HeldLocks;
    return *locks;
  }
  /// Takes the lock into *fd, replacing one held there: no fork between the
  /// descriptor's opening and its registration (the child kept that one).
  void take(int* fd, const std::string& path, const std::string& dir, uint32_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    // Held here (a Python rdmaps.Server still alive beside a new one): by
    // pid, two containers' servers both pid 1 were taken for one process.
    for (const int* held : fds_)
      if (held != fd && *held >= 0 && same_file(*held, path))
        throw Error(Errc::kInvalidArgument, "this process already runs a server " + std::to_string(index) +
                                                " that writes checkpoints to '" + dir +
                                                "' (--checkpoint-dir): destroy it first (its run ended, or not)");
    const int taken = take_lock(path, dir, index);
    if (*fd >= 0) ::close(*fd);
    *fd = taken;
    if (std::find(fds_.begin(), fds_.end(), fd) == fds_.end()) fds_.push_back(fd);
  }
  /// Closes *fd (the lock goes with it) and forgets it.
  void release(int* fd) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase(fds_, fd);
    if (*fd >= 0) ::close(*fd);  // -1 in a forked child: closed at the fork
    *fd = -1;
  }

 private:
  HeldLocks() {
    ::pthread_atfork([] { get().mu_.lock(); }, [] { get().mu_.unlock(); },
                     [] {
                       HeldLocks& h = get();
                       for (int* fd : h.fds_) {
                         ::close(*fd);
                         *fd = -1;
                       }
                       h.fds_.clear();
                       h.mu_.unlock();  // the child's one thread is the one that forked, holding it
                     });
  }
  std::mutex mu_;
  std::vector<int*> fds_;  // the live CheckpointDirLocks' descriptors
};

}  // namespace

CheckpointDirLock::CheckpointDirLock(const std::string& dir, uint32_t index)
    : dir_(dir), path_(dir + "/server-" + std::to_string(index) + ".lock"), index_(index) {
  HeldLocks::get().take(&fd_, path_, dir_, index_);
}

CheckpointDirLock::~CheckpointDirLock() { HeldLocks::get().release(&fd_); }  // the lock goes with the descriptor

bool CheckpointDirLock::retake_if_replaced() {
  struct stat held {
  }, named{};
  if (::fstat(fd_, &held) == 0 && ::stat(path_.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
      held.st_ino == named.st_ino)
    return false;
  // Deleted (with its directory, say) or replaced: the lock held guards a
  // file no other server finds, so take the one they would.
  make_dir(dir_, "cannot create the checkpoint directory again");
  HeldLocks::get().take(&fd_, path_, dir_, index_);
  return true;
}

std::vector<uint32_t> checkpoint_indices(const std::string& dir) {
  std::vector<uint32_t> indices;
  for_each_name(dir, [&](const std::string& name) {
    if (const auto parsed = parse_file_name(name, false)) indices.push_back(parsed->index);
  });
  std::sort(indices.begin(), indices.end());
  indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
  return indices;
}

uint64_t newest_checkpoint_sequence(const std::string& dir, uint32_t index) {
  const auto done = list(dir, index, false);
  return done.empty() ? 0 : done.front().first;
}

void prune_checkpoints(const std::string& dir, uint32_t index, uint32_t keep, const std::vector<uint64_t>& good,
                       uint64_t earlier_job) {
  const auto done = list(dir, index, false);  // newest first
  uint32_t kept = 0;
  uint64_t oldest_kept = 0;
  for (const auto& [sequence, name] : done)
    if (kept < keep && std::find(good.begin(), good.end(), sequence) != good.end()) {
      ++kept;
      oldest_kept = sequence;
    }
  // A newer release's checkpoint is that release's to prune, never this one's.
  if (kept == keep)
    for (const auto& [sequence, name] : done)
      if (sequence < oldest_kept && sequence > earlier_job && newer_format(dir + "/" + name) == 0)
        ::unlink((dir + "/" + name).c_str());
  for (const auto& [sequence, name] : list(dir, index, true)) ::unlink((dir + "/" + name).c_str());
}

Checkpoint read_checkpoint(const std::string& path, uint64_t max_bytes) {
  // What the name is, before it is opened: a socket (ENXIO) or a link to
  // nothing (ENOENT) failed the open as an I/O error, which stops a resume.
  struct stat named {};
  if (::stat(path.c_str(), &named) != 0) {
    if (errno == ENOENT) throw Error(Errc::kInvalidArgument, "'" + path + "' is gone, or a link to nothing");
    io_error("cannot stat", path, Errc::kIo);
  }
  if (!S_ISREG(named.st_mode)) throw Error(Errc::kInvalidArgument, "'" + path + "' is not a regular file");
  File in(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0, Errc::kIo);  // a FIFO by that name must not block the start
  struct stat st {};
  if (::fstat(in.fd(), &st) != 0) io_error("cannot stat", path, Errc::kIo);
  if (!S_ISREG(st.st_mode)) throw Error(Errc::kInvalidArgument, "'" + path + "' is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  // A table of max_bytes at most: its parameters and state, and a version
  // word and a state origin per shard (24 bytes a float in all at
  // --shard-floats 1: six times the table; an allowance of 2 * max_bytes
  // refused a server's own checkpoints there). max_bytes may be near 2^64
  // (--max-bytes): 6 * max_bytes wrapped.
  if (max_bytes < (UINT64_MAX - kMaxHeaderBytes) / 6 && size > 6 * max_bytes + kMaxHeaderBytes)
    throw Error(Errc::kInvalidArgument, "'" + path + "' is " + std::to_string(size) +
                                            " bytes, more than a table this server accepts could need (--max-bytes)");
  std::vector<uint8_t> bytes(size);
  in.read_all(bytes.data(), bytes.size());
  return parse_checkpoint(bytes, path);
}

Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& path) {
  if (bytes.size() < sizeof(kMagic) + 4 + kDigestBytes)
    throw Error(Errc::kInvalidArgument, "'" + path + "' is " + std::to_string(bytes.size()) + " bytes: torn");
  const size_t body = bytes.size() - kDigestBytes;
  transport::Sha256 digest;
  digest.update(bytes.data(), body);
  const auto sum = digest.finish();
  if (std::memcmp(sum.data(), bytes.data() + body, kDigestBytes) != 0)
    throw Error(Errc::kInvalidArgument, "'" + path + "' fails its SHA-256 check: corrupt or torn");
  WireReader r(std::span<const uint8_t>(bytes.data(), body), "checkpoint '" + path + "'");
  char magic[sizeof(kMagic)];
  r.raw(magic, sizeof(magic));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) r.fail("not an rdmaps checkpoint");
  const uint32_t format = r.u32();
  if (format < kOldestFormatVersion || format > kFormatVersion)
    r.fail("format version " + std::to_string(format) + ", this server reads " + std::to_string(kOldestFormatVersion) +
           " to " + std::to_string(kFormatVersion));
  Checkpoint c;
  c.path = path;
  CheckpointHeader& h = c.header;
  h.index = r.u32();
  h.servers = r.u32();
  h.shard_floats = r.u32();
  h.staleness = r.u64();
  h.rule = RuleParams::decode(r);
  const uint32_t tensors = r.u32();
  if (tensors == 0 || tensors > (1u << 20)) r.fail(std::to_string(tensors) + " tensors");
  for (uint32_t i = 0; i < tensors; ++i) {
    TensorDecl t;
    t.name = r.str(4096);
    t.floats = r.u64();
    if (t.name.empty() || t.floats == 0 || t.floats > (1ull << 40)) r.fail("tensor " + std::to_string(i));
    h.tensors.push_back(std::move(t));
  }
  h.sequence = r.u64();
  h.unix_ms = static_cast<int64_t>(r.u64());
  const uint32_t versions = r.u32();
  if (uint64_t{versions} * 8 > body) r.fail(std::to_string(versions) + " shard versions");
  h.versions.resize(versions);
  for (auto& v : h.versions) v = r.u64();
  const uint32_t workers = r.u32();
  if (uint64_t{workers} * 17 > body) r.fail(std::to_string(workers) + " workers");
  h.workers.resize(workers);
  for (auto& w : h.workers) {
    const uint8_t state = r.u8();
    if (state > static_cast<uint8_t>(WorkerState::kGone)) r.fail("worker state " + std::to_string(state));
    w.state = static_cast<WorkerState>(state);
    // As a LaneHello's: a forged clock past it was resumed from, and every
    // worker then refused the start clock its lanes gave it.
    if ((w.clock = r.u64()) > kMaxClock) r.fail("worker clock " + std::to_string(w.clock) + " (at most 2^62)");
    w.pushes = r.u64();
  }
  if (format >= 2) {
    h.earlier_job = r.u64();
    if (h.earlier_job >= h.sequence) r.fail("earlier job's checkpoints up to " + std::to_string(h.earlier_job));
    const uint32_t origins = r.u32();
    if (origins != 0 && origins != versions) r.fail(std::to_string(origins) + " state origins");
    h.state_since.resize(origins);
    for (size_t k = 0; k < h.state_since.size(); ++k)
      if ((h.state_since[k] = r.u64()) > h.versions[k])
        r.fail("shard " + std::to_string(k) + "'s state origin " + std::to_string(h.state_since[k]) +
               " past its version " + std::to_string(h.versions[k]));
  }
  if (format >= 3) h.job = r.u64();
  const uint64_t floats = r.u64();
  const uint8_t has_state = r.u8();
  if (has_state > 1) r.fail("state flag " + std::to_string(has_state));
  const auto arrays = r.rest();
  if (floats > arrays.size() || arrays.size() != floats * sizeof(float) * (has_state ? 2 : 1))
    r.fail(std::to_string(arrays.size()) + " bytes of arrays for " + std::to_string(floats) + " floats");
  if (floats == 0) return c;  // a range of none (an empty vector's data() is null: no memcpy from or to it)
  c.params.resize(floats);
  std::memcpy(c.params.data(), arrays.data(), floats * sizeof(float));
  if (has_state) {
    c.state.resize(floats);
    std::memcpy(c.state.data(), arrays.data() + floats * sizeof(float), floats * sizeof(float));
  }
  return c;
}

std::optional<Checkpoint> load_newest_checkpoint(const std::string& dir, uint32_t index, uint64_t max_bytes,
                                                 const std::function<void(const std::string&)>& log) {
  for (const auto& [sequence, name] : list(dir, index, true))
    log("ignoring " + dir + "/" + name + ": an unfinished write (the server stopped while writing it)");
  const auto done = list(dir, index, false);
  std::string newest_why;
  for (const auto& [sequence, name] : done) {
    // Resuming from an older checkpoint past a newer release's would lose
    // what that release trained, and later pruning would delete it.
    if (const uint32_t format = newer_format(dir + "/" + name))
      throw Error(Errc::kInvalidArgument,
                  "'" + dir + "/" + name + "' is a checkpoint of format version " + std::to_string(format) +
                      ", written by a newer rdmaps; this server reads version " + std::to_string(kFormatVersion) +
                      " and will not resume from an older checkpoint past it: resume with the release that wrote "
                      "it, or move it away");
    // Only a file that is damaged is passed over: one that could not be read
    // (permissions, an I/O error of a network file system, no memory) may be
    // the model, and an older one resumed past it would be pruned.
    const auto stop = [&](Errc code, const std::string& why) {
      return Error(code, why +
                             "; resuming stops here rather than go back to an older checkpoint past it: make it "
                             "readable, or move it away");
    };
    std::string why;
    try {
      Checkpoint c = read_checkpoint(dir + "/" + name, max_bytes);
      // Numbered by its name, as pruning and the next numbers go: one copied
      // over a newer name to restore it kept its old number, and the newer
      // name, counted as not this run's, was pruned.
      c.header.sequence = sequence;
      return c;
    } catch (const Error& e) {
      if (e.code() == Errc::kIo) throw stop(Errc::kIo, e.what());
      why = e.what();
    } catch (const std::bad_alloc&) {
      throw stop(Errc::kNoMemory, "out of memory reading '" + dir + "/" + name + "'");
    }
    log("skipping " + why);
    if (newest_why.empty()) newest_why = why;
  }
  // Starting empty would train from nothing, say success, and prune the
  // files later: the caller asked for this server's model, which is there.
  if (!done.empty())
    throw Error(Errc::kInvalidArgument, "none of the " + std::to_string(done.size()) + " checkpoints of server " +
                                            std::to_string(index) + " in " + dir + " reads back whole (the newest: " +
                                            newest_why + "); restore one, or move them away to start empty");
  return std::nullopt;
}

}  // namespace rdmaps::ps
