#include "src/train/dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "rdmaps/error.h"
#include "src/train/mlp.h"

namespace rdmaps::train {

namespace {

constexpr uint32_t kImageMagic = 0x00000803;  // unsigned bytes, 3 dimensions
constexpr uint32_t kLabelMagic = 0x00000801;  // unsigned bytes, 1 dimension

// One pass over an IDX file, gzip'd or plain: a gzip file is inflated as it
// is read, and each member's CRC-32 and length are checked as its trailer
// arrives. (gzread needed a second inflate of the whole file to check them:
// it ends quietly where a file is cut before its trailer. That pass took a
// third of every worker's start.)
class IdxFile {
 public:
  explicit IdxFile(const std::string& path) : path_(path), input_(1 << 16) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0)
      throw Error(Errc::kIo, "cannot open " + path + ": " + std::strerror(errno) +
                                 (path.ends_with(".gz") ? "" : " (nor " + path + ".gz)") +
                                 " (install dataset-fashion-mnist, or pass --data DIR with the four IDX files)");
    // A directory read as a file gave "corrupt compressed data ... reinstall"; a FIFO would block.
    if (!S_ISREG(st.st_mode)) throw Error(Errc::kIo, "cannot read " + path + ": it is not a regular file");
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) throw Error(Errc::kIo, "cannot open " + path + ": " + std::strerror(errno));
    refill();
    gzip_ = available_ >= 2 && next_[0] == 0x1f && next_[1] == 0x8b;
    if (gzip_ && inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK)
      throw Error(Errc::kNoMemory, path_ + ": zlib could not start");
  }
  ~IdxFile() {
    if (gzip_) inflateEnd(&z_);
  }
  IdxFile(const IdxFile&) = delete;  // zlib's state points back at z_
  IdxFile& operator=(const IdxFile&) = delete;

  uint32_t be32(const char* what) {
    unsigned char b[4];
    read(b, 4, what);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  }
  /// `n` bytes of `what`; a short file is named with `before` bytes of it
  /// read already and `whole` expected in all (default: n).
  void read(void* out, size_t n, const char* what, uint64_t before = 0, uint64_t whole = 0) {
    const size_t got = fill(static_cast<unsigned char*>(out), n, what);
    if (got < n)
      throw Error(Errc::kIo, path_ + ": truncated in " + what + ": expected " + std::to_string(whole ? whole : n) +
                                 " bytes, got " + std::to_string(before + got));
  }
  /// `n` bytes, the buffer grown as they arrive: a header that declares more
  /// than the file holds costs the bytes it holds, not what it declares.
  std::vector<uint8_t> read_declared(uint64_t n, const char* what) {
    constexpr uint64_t kChunk = 16 << 20;
    std::vector<uint8_t> out;
    try {
      while (out.size() < n) {
        const size_t have = out.size();
        out.resize(have + std::min(kChunk, n - have));
        read(out.data() + have, out.size() - have, what, have, n);
      }
    } catch (const std::bad_alloc&) {
      throw Error(Errc::kNoMemory, path_ + ": not enough memory for the " + std::to_string(n) + " bytes of " + what +
                                       " its header declares");
    }
    return out;
  }
  /// Reads on to the end, refusing bytes after the declared data; a gzip
  /// file's last trailer is checked on the way.
  void expect_end() {
    unsigned char extra[4096];
    const size_t r = fill(extra, sizeof(extra), "its end");
    if (r > 0) fail(std::to_string(r) + (r == sizeof(extra) ? "+" : "") + " bytes after the data its header declares");
  }
  [[noreturn]] void fail(const std::string& why) const { throw Error(Errc::kProtocol, path_ + ": " + why); }

 private:
  Error corrupt(const char* zlib_message, const char* where) const {
    return Error(Errc::kIo, path_ + ": corrupt compressed data in " + where + " (zlib: " + zlib_message +
                                "; the gzip stream or its CRC check failed): download or reinstall the file");
  }
  /// The next bytes of the file into input_; false at its end.
  bool refill() {
    const size_t n = std::fread(input_.data(), 1, input_.size(), file_.get());
    if (n == 0 && std::ferror(file_.get()))
      throw Error(Errc::kIo, "cannot read " + path_ + ": " + std::strerror(errno));
    next_ = input_.data();
    available_ = n;
    return n > 0;
  }
  /// Up to `n` bytes of data into `out`; fewer only where the data end.
  size_t fill(unsigned char* out, size_t n, const char* where) {
    size_t got = 0;
    while (got < n && !ended_) {
      if (available_ == 0 && !refill()) {
        // gzread ended quietly here: a file cut before its trailer was taken.
        if (gzip_ && !member_ended_) throw corrupt("the file ends before its gzip trailer (CRC-32 and length)", where);
        ended_ = true;
        break;
      }
      if (!gzip_) {
        const size_t take = std::min(n - got, available_);
        std::memcpy(out + got, next_, take);
        next_ += take, available_ -= take, got += take;
        continue;
      }
      if (member_ended_) {  // another member may follow (gzip -d reads them all), or zeros (padding)
        if (next_[0] != 0x1f) {
          if (!zeros_to_end()) throw corrupt("bytes after the gzip data", "its end");
          ended_ = true;
          break;
        }
        inflateReset(&z_);
        member_ended_ = false;
      }
      z_.next_in = next_;
      z_.avail_in = static_cast<uInt>(available_);
      z_.next_out = out + got;
      z_.avail_out = static_cast<uInt>(std::min<size_t>(n - got, 1u << 30));
      const uInt asked = z_.avail_out;
      const int ret = inflate(&z_, Z_NO_FLUSH);
      got += asked - z_.avail_out;
      next_ = z_.next_in;
      available_ = z_.avail_in;
      if (ret == Z_STREAM_END)
        member_ended_ = true;
      else if (ret != Z_OK)  // both buffers had room: no error of zlib's but corruption is left
        throw corrupt(z_.msg ? z_.msg : "inflate failed", where);
    }
    return got;
  }
  bool zeros_to_end() {
    do {
      if (std::any_of(next_, next_ + available_, [](unsigned char b) { return b != 0; })) return false;
    } while (refill());
    return true;
  }

  std::string path_;
  std::unique_ptr<FILE, int (*)(FILE*)> file_{nullptr, &std::fclose};
  std::vector<unsigned char> input_;
  unsigned char* next_ = nullptr;  // the unread part of input_
  size_t available_ = 0;
  bool gzip_ = false, member_ended_ = false, ended_ = false;
  z_stream z_{};
};

std::string hex(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof(b), "0x%08x", v);
  return b;
}

// Each file's header, checked: its magic, plausible dimensions, and as many
// labels as images.
void read_image_header(IdxFile& images, Dataset& d) {
  const uint32_t magic = images.be32("the header");
  if (magic != kImageMagic)
    images.fail("magic " + hex(magic) + " is not an IDX image file (expected " + hex(kImageMagic) + ")");
  d.count = images.be32("the header");
  d.rows = images.be32("the header");
  d.cols = images.be32("the header");
  if (d.count == 0 || d.rows == 0 || d.cols == 0 || d.rows > 4096 || d.cols > 4096 || d.count > (1u << 26))
    images.fail("implausible dimensions " + std::to_string(d.count) + " x " + std::to_string(d.rows) + " x " +
                std::to_string(d.cols));
  // A header is not trusted with memory: at most 4 GiB of pixels (Fashion-MNIST has 47 MB).
  const uint64_t bytes = uint64_t{d.count} * d.pixels();
  if (bytes > (uint64_t{1} << 32))
    images.fail("its header declares " + std::to_string(bytes) + " bytes of pixels, more than the 4 GiB this reads");
}

void read_label_header(IdxFile& labels, const Dataset& d, const std::string& images_path) {
  const uint32_t magic = labels.be32("the header");
  if (magic != kLabelMagic)
    labels.fail("magic " + hex(magic) + " is not an IDX label file (expected " + hex(kLabelMagic) + ")");
  const uint32_t n = labels.be32("the header");
  if (n != d.count)
    labels.fail(std::to_string(n) + " labels for " + std::to_string(d.count) + " images in " + images_path);
}

enum class Read { kHeaders, kAll };

Dataset read_idx(const std::string& images_path, const std::string& labels_path, Read what) {
  Dataset d;
  d.images_path = images_path;
  IdxFile images(images_path);
  read_image_header(images, d);
  if (what == Read::kAll) {
    const std::vector<uint8_t> raw = images.read_declared(uint64_t{d.count} * d.pixels(), "the pixel data");
    images.expect_end();
    d.images.resize(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) d.images[i] = raw[i] * (1.0f / 255.0f);
  }
  IdxFile labels(labels_path);
  read_label_header(labels, d, images_path);
  if (what == Read::kHeaders) return d;
  d.labels = labels.read_declared(d.count, "the labels");
  labels.expect_end();
  for (size_t i = 0; i < d.count; ++i)
    if (d.labels[i] > 9)
      labels.fail("label " + std::to_string(d.labels[i]) + " at index " + std::to_string(i) + " is not 0..9");
  return d;
}

TrainTest read_dataset_dir(const std::string& dir, Read what) {
  if (dir.empty()) throw Error(Errc::kInvalidArgument, "the dataset directory is empty (--data '')");
  // Named as the directory, not as its first file's path under it.
  struct stat dir_st {};
  const int err = stat(dir.c_str(), &dir_st) == 0 ? 0 : errno;
  if (err != 0 || !S_ISDIR(dir_st.st_mode))
    throw Error(Errc::kIo, "the dataset directory " + dir + " (--data) " +
                               (err == ENOENT ? "does not exist"
                                : err == 0    ? "is not a directory"
                                              : std::string("cannot be read: ") + std::strerror(err)) +
                               ": give the directory that holds the four IDX files (install dataset-fashion-mnist "
                               "for " +
                               kDefaultDataDir + ")");
  auto path = [&](const char* name) {
    std::string gz = dir + "/" + name + ".gz", plain = dir + "/" + name;
    struct stat st {};
    return stat(gz.c_str(), &st) == 0 ? gz : plain;
  };
  TrainTest t;
  t.train = read_idx(path("train-images-idx3-ubyte"), path("train-labels-idx1-ubyte"), what);
  t.test = read_idx(path("t10k-images-idx3-ubyte"), path("t10k-labels-idx1-ubyte"), what);
  if (t.train.rows != t.test.rows || t.train.cols != t.test.cols)
    throw Error(Errc::kProtocol, t.train.images_path + " holds images of " + std::to_string(t.train.rows) + "x" +
                                     std::to_string(t.train.cols) + ", " + t.test.images_path + " of " +
                                     std::to_string(t.test.rows) + "x" + std::to_string(t.test.cols));
  // The model reads 784 pixels an image (smaller ones read past the end),
  // as 28 rows of 28: 14x56 has the pixels but not the images.
  static_assert(Mlp::kIn == 28 * 28);
  if (t.train.rows != 28 || t.train.cols != 28)
    throw Error(Errc::kProtocol, path("train-images-idx3-ubyte") + ": images are " + std::to_string(t.train.rows) +
                                     "x" + std::to_string(t.train.cols) + "; the model takes 28x28 (" +
                                     std::to_string(Mlp::kIn) + " pixels, Fashion-MNIST's or MNIST's)");
  return t;
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path) {
  return read_idx(images_path, labels_path, Read::kAll);
}

TrainTest load_dataset_dir(const std::string& dir) { return read_dataset_dir(dir, Read::kAll); }

TrainTest check_dataset_dir(const std::string& dir) { return read_dataset_dir(dir, Read::kHeaders); }

}  // namespace rdmaps::train
