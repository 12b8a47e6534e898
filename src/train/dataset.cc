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

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

class IdxFile {
 public:
  explicit IdxFile(const std::string& path) : path_(path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0)
      throw Error(Errc::kIo, "cannot open " + path + ": " + std::strerror(errno) +
                                 " (install dataset-fashion-mnist, or pass --data DIR with the four IDX files)");
    // A directory read as a file gave "corrupt compressed data ... reinstall"; a FIFO would block.
    if (!S_ISREG(st.st_mode)) throw Error(Errc::kIo, "cannot read " + path + ": it is not a regular file");
    file_.reset(gzopen(path.c_str(), "rb"));
    if (!file_) throw Error(Errc::kIo, "cannot open " + path + ": " + std::strerror(errno));
  }
  uint32_t be32(const char* what) {
    unsigned char b[4];
    read(b, 4, what);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  }
  /// `n` bytes of `what`; a short file is named with `before` bytes of it
  /// read already and `whole` expected in all (default: n).
  void read(void* out, size_t n, const char* what, uint64_t before = 0, uint64_t whole = 0) {
    auto* p = static_cast<unsigned char*>(out);
    size_t got = 0;
    while (got < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30));
      int r = gzread(file_.get(), p + got, chunk);
      if (r <= 0) {
        int err = 0;
        const char* msg = gzerror(file_.get(), &err);
        if (err != Z_OK && err != Z_STREAM_END) throw corrupt(msg, what);
        throw Error(Errc::kIo, path_ + ": truncated in " + what + ": expected " + std::to_string(whole ? whole : n) +
                                   " bytes, got " + std::to_string(before + got));
      }
      got += static_cast<size_t>(r);
    }
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
  /// Reads on to the end, refusing bytes after the declared data, and has a
  /// compressed file's every gzip trailer (CRC-32 and length) checked.
  void expect_end() {
    unsigned char extra[4096];
    int r = gzread(file_.get(), extra, sizeof(extra));
    int err = Z_OK;
    const char* msg = gzerror(file_.get(), &err);
    if (r < 0 || (err != Z_OK && err != Z_STREAM_END)) throw corrupt(msg, "its end");
    if (r > 0) fail(std::to_string(r) + (r == sizeof(extra) ? "+" : "") + " bytes after the data its header declares");
    if (!gzdirect(file_.get())) check_gzip_trailers();
  }
  [[noreturn]] void fail(const std::string& why) const { throw Error(Errc::kProtocol, path_ + ": " + why); }
  Error corrupt(const char* zlib_message, const char* where) const {
    return Error(Errc::kIo, path_ + ": corrupt compressed data in " + where + " (zlib: " + zlib_message +
                                "; the gzip stream or its CRC check failed): download or reinstall the file");
  }

 private:
  // gzread ends quietly where the input was all read before the stream's
  // end: a file cut by its 8-byte trailer was taken, its CRC never checked
  // (and bytes after the gzip data were ignored). inflate() says so: each
  // member must reach its end, and nothing but another member may follow,
  // or zeros (padding, which gzip -d ignores too).
  void check_gzip_trailers() const {
    std::unique_ptr<FILE, int (*)(FILE*)> in(std::fopen(path_.c_str(), "rb"), &std::fclose);
    if (!in) throw Error(Errc::kIo, "cannot open " + path_ + ": " + std::strerror(errno));
    z_stream z{};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw Error(Errc::kNoMemory, path_ + ": zlib could not start");
    std::unique_ptr<z_stream, int (*)(z_stream*)> end(&z, &inflateEnd);
    std::vector<unsigned char> input(1 << 16), output(1 << 16);
    bool member_ended = false;
    for (;;) {
      if (z.avail_in == 0) {
        const size_t n = std::fread(input.data(), 1, input.size(), in.get());
        if (n == 0) break;
        z.next_in = input.data();
        z.avail_in = static_cast<uInt>(n);
      }
      if (member_ended) {
        if (z.next_in[0] != 0x1f) {  // no gzip member's magic
          if (zeros_to_end(z.next_in, z.avail_in, in.get())) return;
          throw corrupt("bytes after the gzip data", "its end");
        }
        inflateReset(&z);
      }
      z.next_out = output.data();
      z.avail_out = static_cast<uInt>(output.size());
      const int ret = inflate(&z, Z_NO_FLUSH);
      member_ended = ret == Z_STREAM_END;
      if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR)
        throw corrupt(z.msg ? z.msg : "inflate failed", "its gzip stream");
    }
    if (std::ferror(in.get())) throw Error(Errc::kIo, "cannot read " + path_ + ": " + std::strerror(errno));
    if (!member_ended) throw corrupt("the file ends before its gzip trailer (CRC-32 and length)", "its end");
  }

  static bool zeros_to_end(const unsigned char* p, size_t n, FILE* in) {
    unsigned char rest[4096];
    do {
      if (std::any_of(p, p + n, [](unsigned char b) { return b != 0; })) return false;
      n = std::fread(rest, 1, sizeof(rest), in);
      p = rest;
    } while (n > 0);
    return true;
  }

  std::string path_;
  GzFile file_;
};

std::string hex(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof(b), "0x%08x", v);
  return b;
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path) {
  Dataset d;
  IdxFile images(images_path);
  uint32_t magic = images.be32("the header");
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
  const std::vector<uint8_t> raw = images.read_declared(bytes, "the pixel data");
  images.expect_end();
  d.images.resize(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) d.images[i] = raw[i] * (1.0f / 255.0f);

  IdxFile labels(labels_path);
  magic = labels.be32("the header");
  if (magic != kLabelMagic)
    labels.fail("magic " + hex(magic) + " is not an IDX label file (expected " + hex(kLabelMagic) + ")");
  uint32_t n = labels.be32("the header");
  if (n != d.count)
    labels.fail(std::to_string(n) + " labels for " + std::to_string(d.count) + " images in " + images_path);
  d.labels = labels.read_declared(n, "the labels");
  labels.expect_end();
  for (size_t i = 0; i < n; ++i)
    if (d.labels[i] > 9)
      labels.fail("label " + std::to_string(d.labels[i]) + " at index " + std::to_string(i) + " is not 0..9");
  return d;
}

TrainTest load_dataset_dir(const std::string& dir) {
  if (dir.empty()) throw Error(Errc::kInvalidArgument, "the dataset directory is empty (--data '')");
  auto path = [&](const char* name) {
    std::string gz = dir + "/" + name + ".gz", plain = dir + "/" + name;
    struct stat st {};
    return stat(gz.c_str(), &st) == 0 ? gz : plain;
  };
  TrainTest t;
  t.train = load_idx(path("train-images-idx3-ubyte"), path("train-labels-idx1-ubyte"));
  t.test = load_idx(path("t10k-images-idx3-ubyte"), path("t10k-labels-idx1-ubyte"));
  if (t.train.rows != t.test.rows || t.train.cols != t.test.cols)
    throw Error(Errc::kProtocol, dir + ": train images are " + std::to_string(t.train.rows) + "x" +
                                     std::to_string(t.train.cols) + ", test images " + std::to_string(t.test.rows) +
                                     "x" + std::to_string(t.test.cols));
  // The model reads 784 pixels an image (smaller ones read past the end),
  // as 28 rows of 28: 14x56 has the pixels but not the images.
  static_assert(Mlp::kIn == 28 * 28);
  if (t.train.rows != 28 || t.train.cols != 28)
    throw Error(Errc::kProtocol, path("train-images-idx3-ubyte") + ": images are " + std::to_string(t.train.rows) +
                                     "x" + std::to_string(t.train.cols) + "; the model takes 28x28 (" +
                                     std::to_string(Mlp::kIn) + " pixels, Fashion-MNIST's or MNIST's)");
  return t;
}

}  // namespace rdmaps::train
