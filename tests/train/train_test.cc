// The training job's pieces: IDX reading, the MLP's gradient, the straggler,
// the virtual workers' schedule.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <zlib.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include "rdmaps/error.h"
#include "src/train/dataset.h"
#include "src/train/evaluator.h"
#include "src/train/mlp.h"
#include "src/train/virtual_workers.h"
#include "src/train/worker.h"
#include "tests/ps/fixture.h"

namespace rdmaps::train {
namespace {

std::string temp_path(const std::string& name) { return testing::TempDir() + "rdmaps-" + name; }

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::vector<uint8_t> be32(std::initializer_list<uint32_t> words) {
  std::vector<uint8_t> out;
  for (uint32_t w : words) out.insert(out.end(), {uint8_t(w >> 24), uint8_t(w >> 16), uint8_t(w >> 8), uint8_t(w)});
  return out;
}

std::string error_of(const std::string& images, const std::string& labels) {
  try {
    load_idx(images, labels);
  } catch (const Error& e) {
    return e.what();
  }
  return "accepted";
}

// A well-formed dataset of 14x14 images: the model reads 784 pixels an
// image, so a worker read past the end of them (killed by SIGSEGV).
TEST(Idx, ADatasetOfImagesOtherThan28x28IsRefusedNamingTheirSize) {
  const std::string dir = temp_path("idx14");
  std::filesystem::create_directories(dir);
  for (const char* set : {"train", "t10k"}) {
    auto images = be32({0x803, 2, 14, 14});
    images.resize(images.size() + 2 * 14 * 14, 7);
    auto labels = be32({0x801, 2});
    labels.insert(labels.end(), {1, 2});
    write_gz(dir + "/" + set + "-images-idx3-ubyte.gz", images);
    write_gz(dir + "/" + set + "-labels-idx1-ubyte.gz", labels);
  }
  for (auto* read : {&load_dataset_dir, &check_dataset_dir}) {  // rdmaps-train's own check reads the headers
    std::string what = "accepted";
    try {
      read(dir);
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find("train-images-idx3-ubyte.gz: images are 14x14; the model takes 28x28"), std::string::npos)
        << what;
  }
  std::filesystem::remove_all(dir);
}

// rdmaps-train checks the dataset before any process starts from the
// headers alone: the counts and shapes, no pixels; a wrong magic or a
// missing label file is named all the same.
TEST(Idx, CheckingADatasetReadsItsHeadersOnly) {
  const TrainTest t = check_dataset_dir(kDefaultDataDir);
  EXPECT_EQ(t.train.count, 60000u);
  EXPECT_EQ(t.test.count, 10000u);
  EXPECT_EQ(t.train.pixels(), 784u);
  EXPECT_TRUE(t.train.images.empty() && t.train.labels.empty() && t.test.images.empty());

  const std::string dir = temp_path("idx-headers");
  std::filesystem::create_directories(dir);
  for (const char* set : {"train", "t10k"}) {
    auto images = be32({0x803, 2, 28, 28});
    images.resize(images.size() + 2 * 28 * 28, 7);
    write_gz(dir + "/" + set + "-images-idx3-ubyte.gz", images);
  }
  auto what = [&] {
    try {
      check_dataset_dir(dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(what().find("train-labels-idx1-ubyte"), std::string::npos) << what();
  auto labels = be32({0x803, 2});  // an image file's magic
  labels.insert(labels.end(), {1, 2});
  write_gz(dir + "/train-labels-idx1-ubyte.gz", labels);
  EXPECT_NE(what().find("magic 0x00000803 is not an IDX label file"), std::string::npos) << what();
  std::filesystem::remove_all(dir);
}

// A directory where a file should be was read as corrupt data ("reinstall"),
// and an empty --data named "/train-images-idx3-ubyte".
TEST(Idx, ADirectoryForAFileAndAnEmptyDirectoryNameAreNamedAsSuch) {
  const std::string dir = temp_path("idxdir");
  std::filesystem::create_directories(dir + "/train-images-idx3-ubyte.gz");
  std::string what = "accepted";
  try {
    load_dataset_dir(dir);
  } catch (const Error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("cannot read " + dir + "/train-images-idx3-ubyte.gz: it is not a regular file"),
            std::string::npos)
      << what;
  what = "accepted";
  try {
    load_dataset_dir("");
  } catch (const Error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("the dataset directory is empty (--data '')"), std::string::npos) << what;
  std::filesystem::remove_all(dir);
}

// A wrong --data was named as its first file's path ("cannot open DIR/train-images-idx3-ubyte").
TEST(Idx, AMissingDataDirectoryOrAFileGivenForItIsNamedAsTheDirectory) {
  const std::string file = temp_path("idx-a-file");
  std::ofstream(file) << "not a directory";
  for (const auto& [dir, why] : {std::pair<std::string, std::string>{temp_path("idx-none"), "does not exist"},
                                 std::pair<std::string, std::string>{file, "is not a directory"}}) {
    std::string what = "accepted";
    try {
      check_dataset_dir(dir);
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find("the dataset directory " + dir + " (--data) " + why), std::string::npos) << what;
  }
  std::filesystem::remove(file);
}

// A limit past the data trained and tested on fewer examples without a word.
TEST(Idx, ALimitPastTheDataIsRefusedNamingTheFlagAndTheFile) {
  Dataset set;
  set.count = 300;
  set.images_path = "/data/train-images-idx3-ubyte.gz";
  EXPECT_EQ(examples_used("--train-limit", 0, set), 300u);
  EXPECT_EQ(examples_used("--train-limit", 300, set), 300u);
  EXPECT_EQ(examples_used("--train-limit", 120, set), 120u);
  std::string what = "accepted";
  try {
    examples_used("--test-limit", 301, set);
  } catch (const Error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("--test-limit 301: /data/train-images-idx3-ubyte.gz holds 300 examples"), std::string::npos)
      << what;
}

// 784 pixels but not 28x28 (the test set's header rewritten to 14x56, or
// both sets'): the count matched, so both were taken.
TEST(Idx, ImagesOfTheRightPixelCountButAnotherShapeAreRefused) {
  const std::string dir = temp_path("idx14x56");
  std::filesystem::create_directories(dir);
  auto write = [&](const char* set, uint32_t rows, uint32_t cols) {
    auto images = be32({0x803, 2, rows, cols});
    images.resize(images.size() + 2 * 784, 7);
    auto labels = be32({0x801, 2});
    labels.insert(labels.end(), {1, 2});
    write_gz(dir + "/" + set + "-images-idx3-ubyte.gz", images);
    write_gz(dir + "/" + set + "-labels-idx1-ubyte.gz", labels);
  };
  auto what = [&] {
    try {
      load_dataset_dir(dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  write("train", 28, 28);
  write("t10k", 14, 56);
  // Each file named as read (gzip'd or plain, each found on its own), not only their directory.
  EXPECT_NE(what().find(dir + "/train-images-idx3-ubyte.gz holds images of 28x28, " + dir +
                        "/t10k-images-idx3-ubyte.gz of 14x56"),
            std::string::npos)
      << what();
  write("train", 14, 56);
  EXPECT_NE(what().find("images are 14x56; the model takes 28x28"), std::string::npos) << what();
  std::filesystem::remove_all(dir);
}

TEST(Idx, ReadsGoodFilesAndRejectsCorruptOnesNamingTheFile) {
  auto images = be32({0x803, 3, 2, 2});
  for (uint8_t v : {0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8}) images.push_back(v);
  auto labels = be32({0x801, 3});
  labels.insert(labels.end(), {7, 0, 9});
  std::string img = temp_path("img.gz"), lab = temp_path("lab.gz");
  write_gz(img, images);
  write_gz(lab, labels);
  Dataset d = load_idx(img, lab);
  EXPECT_EQ(d.count, 3u);
  EXPECT_EQ(d.pixels(), 4u);
  EXPECT_FLOAT_EQ(d.images[1], 1.0f);
  EXPECT_FLOAT_EQ(d.images[2], 0.2f);
  EXPECT_EQ(d.labels[2], 9);

  std::string bad = temp_path("bad.gz");
  write_gz(bad, std::vector<uint8_t>(images.begin(), images.end() - 5));
  std::string why = error_of(bad, lab);
  EXPECT_NE(why.find(bad), std::string::npos) << why;
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;

  auto wrong = images;
  wrong[3] = 0x01;
  write_gz(bad, wrong);
  why = error_of(bad, lab);
  EXPECT_NE(why.find("magic 0x00000801"), std::string::npos) << why;
  EXPECT_NE(why.find("expected 0x00000803"), std::string::npos) << why;

  auto fewer = be32({0x801, 2});
  fewer.insert(fewer.end(), {1, 2});
  write_gz(bad, fewer);
  why = error_of(img, bad);
  EXPECT_NE(why.find("2 labels for 3 images"), std::string::npos) << why;

  auto big = be32({0x801, 3});
  big.insert(big.end(), {7, 0, 12});
  write_gz(bad, big);
  EXPECT_NE(error_of(img, bad).find("label 12"), std::string::npos);

  // A header declaring 60000 x 4096 x 4096 pixels is refused before anything is allocated.
  write_gz(bad, be32({0x803, 60000, 4096, 4096}));
  why = error_of(bad, lab);
  EXPECT_NE(why.find("more than the 4 GiB"), std::string::npos) << why;

  // Bytes after the declared data are refused.
  auto longer = labels;
  longer.push_back(3);
  write_gz(bad, longer);
  why = error_of(img, bad);
  EXPECT_NE(why.find("1 bytes after the data"), std::string::npos) << why;

  why = error_of(temp_path("missing.gz"), lab);
  EXPECT_NE(why.find("missing.gz"), std::string::npos) << why;
  EXPECT_NE(why.find("dataset-fashion-mnist"), std::string::npos) << why;
}

// Peak resident memory of this process so far, in MiB.
long peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

// A header that declares 5,000,000 images over a file of a few bytes: the
// reader allocated (and zeroed) the 3.9 GB it declared before it found the
// file short, 13.7 s and 3.8 GB resident for a 4.7 MB file.
TEST(Idx, AHeaderDeclaringMoreThanTheFileHoldsCostsOnlyWhatItHolds) {
  auto images = be32({0x803, 5000000, 28, 28});
  images.resize(images.size() + 4096, 7);
  for (const bool compressed : {true, false}) {
    SCOPED_TRACE(compressed ? "gzip" : "plain");
    const std::string bad = temp_path(compressed ? "declares-more.gz" : "declares-more");
    if (compressed)
      write_gz(bad, images);
    else
      std::ofstream(bad, std::ios::binary)
          .write(reinterpret_cast<const char*>(images.data()), static_cast<std::streamsize>(images.size()));
    const long before = peak_rss_mib();
    const std::string why = error_of(bad, temp_path("no-labels.gz"));
    EXPECT_NE(why.find(bad + ": truncated in the pixel data: expected 3920000000 bytes, got 4096"), std::string::npos)
        << why;
    EXPECT_LT(peak_rss_mib() - before, 256) << "the reader allocated what the header declared";
  }
}

// The real test images, corrupted four ways: 64 bytes flipped in the middle
// of the compressed stream, the CRC in the gzip trailer changed (the data
// inflate cleanly; only reading to the end catches it), the trailer cut off
// (gzread ended quietly: taken), and bytes after the gzip data (ignored).
// Each names the file; zeros after it (padding, which gzip -d ignores) are
// no corruption.
TEST(Idx, ACorruptedGzipFileIsAnErrorNamingIt) {
  const std::string dir = kDefaultDataDir;
  std::ifstream in(dir + "/t10k-images-idx3-ubyte.gz", std::ios::binary);
  ASSERT_TRUE(in) << "no Fashion-MNIST in " << dir << " (scripts/install-deps.sh installs dataset-fashion-mnist)";
  const std::vector<char> good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string labels = dir + "/t10k-labels-idx1-ubyte.gz", bad = temp_path("t10k-images-corrupt.gz");
  auto middle = good, trailer = good, cut = good, junk = good;
  for (size_t i = 0; i < 64; ++i) middle[middle.size() / 2 + i] ^= 0x5a;
  trailer[trailer.size() - 8] ^= 0x01;  // the stored CRC-32's first byte
  cut.resize(cut.size() - 8);
  junk.insert(junk.end(), {'j', 'u', 'n', 'k'});
  for (const auto* bytes : {&middle, &trailer, &cut, &junk}) {
    std::ofstream(bad, std::ios::binary).write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    std::string why = error_of(bad, labels);
    EXPECT_NE(why.find(bad), std::string::npos) << why;
    EXPECT_NE(why.find("corrupt compressed data"), std::string::npos) << why;
  }
  EXPECT_EQ(load_idx(dir + "/t10k-images-idx3-ubyte.gz", labels).count, 10000u);  // the real ones load
  auto padded = good;
  padded.resize(padded.size() + 5000, 0);
  std::ofstream(bad, std::ios::binary | std::ios::trunc)
      .write(padded.data(), static_cast<std::streamsize>(padded.size()));
  EXPECT_EQ(load_idx(bad, labels).count, 10000u);
}

// The same images as one gzip member, as two (gzip -d reads them all, as
// `cat a.gz b.gz` makes them), and plain: the same pixels; a second member
// with its CRC broken is caught too.
TEST(Idx, GzipMembersAndPlainFilesReadTheSameBytes) {
  auto images = be32({0x803, 50, 28, 28});
  for (size_t i = 0; i < 50 * 28 * 28; ++i) images.push_back(static_cast<uint8_t>(i * 7 + i / 13));
  auto labels = be32({0x801, 50});
  for (uint8_t i = 0; i < 50; ++i) labels.push_back(i % 10);
  const std::string one = temp_path("one.gz"), head = temp_path("head.gz"), tail = temp_path("tail.gz"),
                    two = temp_path("two.gz"), plain = temp_path("plain"), lab = temp_path("members-lab.gz");
  write_gz(one, images);
  write_gz(lab, labels);
  const size_t split = 1234;  // inside the pixels, off any boundary of the reader's
  write_gz(head, std::vector<uint8_t>(images.begin(), images.begin() + split));
  write_gz(tail, std::vector<uint8_t>(images.begin() + split, images.end()));
  auto bytes_of = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  std::vector<char> joined = bytes_of(head), second = bytes_of(tail);
  joined.insert(joined.end(), second.begin(), second.end());
  std::ofstream(two, std::ios::binary).write(joined.data(), static_cast<std::streamsize>(joined.size()));
  std::ofstream(plain, std::ios::binary)
      .write(reinterpret_cast<const char*>(images.data()), static_cast<std::streamsize>(images.size()));

  const Dataset want = load_idx(one, lab);
  ASSERT_EQ(want.count, 50u);
  EXPECT_FLOAT_EQ(want.images[2000], static_cast<uint8_t>(2000 * 7 + 2000 / 13) / 255.0f);
  for (const std::string& path : {two, plain}) {
    SCOPED_TRACE(path);
    const Dataset d = load_idx(path, lab);
    EXPECT_EQ(d.images, want.images);
    EXPECT_EQ(d.labels, want.labels);
  }
  joined[joined.size() - 8] ^= 0x01;  // the second member's CRC-32
  std::ofstream(two, std::ios::binary | std::ios::trunc)
      .write(joined.data(), static_cast<std::streamsize>(joined.size()));
  const std::string why = error_of(two, lab);
  EXPECT_NE(why.find(two + ": corrupt compressed data"), std::string::npos) << why;
}

// A seed gives the same bits whatever caches Eigen detects: its blocking
// (from the caches) set the order of each sum, and a 32 KiB L1 changed most
// of a product's results against this VM's 48 KiB.
TEST(Mlp, TheGradientsBitsDoNotDependOnTheCachesEigenDetects) {
  std::vector<float> params(Mlp::kParams);
  Mlp::init(params, 7);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> pixel(0, 1);
  const size_t batch = 256;
  std::vector<float> x(batch * Mlp::kIn);
  for (auto& v : x) v = pixel(rng);
  std::vector<uint8_t> y(batch);
  for (size_t i = 0; i < batch; ++i) y[i] = static_cast<uint8_t>(i % 10);
  Mlp model;
  auto gradient = [&] {
    std::vector<float> g(Mlp::kParams);
    model.loss_and_gradient(params, x.data(), y.data(), batch, g);
    return g;
  };
  const std::vector<float> pinned = gradient();
  const std::ptrdiff_t other_machines[][3] = {{32 << 10, 256 << 10, 8 << 20}, {64 << 10, 1 << 20, 32 << 20}};
  bool any_differs = false;
  for (const auto& caches : other_machines) {
    Eigen::setCpuCacheSizes(caches[0], caches[1], caches[2]);  // what Eigen detects there
    any_differs |= gradient() != pinned;
    Eigen::setCpuCacheSizes(caches[0], caches[1], caches[2]);
    pin_eigen_blocking();  // as the first Mlp of a process does
    EXPECT_EQ(gradient(), pinned) << "L1 " << caches[0];
  }
  EXPECT_TRUE(any_differs) << "no cache size changed the bits: this test shows nothing";
  pin_eigen_blocking();
}

TEST(Mlp, GradientMatchesFiniteDifferences) {
  std::vector<float> params(Mlp::kParams), grad(Mlp::kParams);
  Mlp::init(params, 5);
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> pixel(0, 1);
  const size_t batch = 4;
  std::vector<float> x(batch * Mlp::kIn);
  for (auto& v : x) v = pixel(rng);
  std::vector<uint8_t> y = {3, 1, 4, 1};
  Mlp model;
  model.loss_and_gradient(params, x.data(), y.data(), batch, grad);
  std::vector<float> scratch(Mlp::kParams);
  auto loss_at = [&](size_t i, float delta) {
    float saved = params[i];
    params[i] = saved + delta;
    float l = model.loss_and_gradient(params, x.data(), y.data(), batch, scratch);
    params[i] = saved;
    return static_cast<double>(l);
  };
  std::uniform_int_distribution<size_t> pick(0, Mlp::kParams - 1);
  // A ReLU kink within a step of some pre-activation makes the difference
  // quotient meaningless there: skip coordinates whose quotients at three
  // step sizes disagree, and allow two stragglers of 40 (a wrong backward
  // pass misses nearly all of them).
  int checked = 0, off = 0;
  for (int tries = 0; checked < 40 && tries < 400; ++tries) {
    size_t i = pick(rng);
    double q[3];
    for (int k = 0; k < 3; ++k) {
      float h = 1e-2f / static_cast<float>(1 << k);
      q[k] = (loss_at(i, h) - loss_at(i, -h)) / (2.0 * h);
    }
    if (std::abs(q[0] - q[2]) > 1e-3 + 0.05 * std::abs(q[2]) || std::abs(q[1] - q[2]) > 1e-3 + 0.05 * std::abs(q[2]))
      continue;
    ++checked;
    if (std::abs(grad[i] - q[2]) > 2e-3 + 0.05 * std::abs(q[2])) {
      ++off;
      std::printf("parameter %zu: backprop %g, finite difference %g\n", i, grad[i], q[2]);
    }
  }
  EXPECT_GE(checked, 40);
  EXPECT_LE(off, 2) << off << " of " << checked << " coordinates disagree with finite differences";
}

// What one worker of run_two_workers() reported at the end, and its wall time.
struct WorkerEnd {
  uint64_t steps = 0, straggled = 0;
  double compute_s = 0, wall_s = 0, clock_wait_s = 0;
};

// Two workers, fully asynchronous (neither waits for the other), on a small
// constant task of `train_images` images: only their timing and counts matter.
std::array<WorkerEnd, 2> run_two_workers(size_t train_images, uint32_t epochs,
                                         const std::function<void(uint32_t, WorkerOptions&)>& set) {
  TrainTest data;
  for (Dataset* d : {&data.train, &data.test}) {
    d->count = d == &data.train ? train_images : 64;
    d->rows = d->cols = 28;
    d->images.assign(d->count * d->pixels(), 0.5f);
    d->labels.assign(d->count, 3);
  }
  Config c;
  c.transport = "shm";
  c.staleness = kInfiniteStaleness;
  test::ServerGroup servers(1, 2, c);
  std::array<WorkerEnd, 2> ends;
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < 2; ++w)
    threads.emplace_back([&, w] {
      ClientOptions co;
      co.servers = {servers.addresses()};
      co.worker = w;
      co.config = c;
      co.config.secret = test::test_secret();
      WorkerOptions wo;
      wo.worker = w;
      wo.workers = 2;
      wo.epochs = epochs;
      set(w, wo);
      auto start = std::chrono::steady_clock::now();
      run_worker(co, wo, data, [&](const std::string& line) {
        if (line.rfind("done", 0) != 0) return;
        std::istringstream in(line.substr(5));
        uint64_t skip;
        in >> skip >> ends[w].steps >> skip >> skip >> skip >> skip >> ends[w].compute_s >> ends[w].straggled >> skip >>
            skip >> skip >> ends[w].clock_wait_s;
      });
      ends[w].wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
  for (auto& t : threads) t.join();
  return ends;
}

// A test set whose accuracy depends on the weights: random images, labels 0..9.
Dataset random_test_set(size_t count) {
  Dataset d;
  d.count = count;
  d.rows = d.cols = 28;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> pixel(0, 1);
  d.images.resize(count * d.pixels());
  for (float& x : d.images) x = pixel(rng);
  for (size_t i = 0; i < count; ++i) d.labels.push_back(static_cast<uint8_t>(i % 10));
  return d;
}

// "eval W EPOCH ACCURACY LOSS STEP" without the age, which is wall time.
std::string without_age(const std::string& line) { return line.substr(0, line.rfind(' ')); }

TEST(Evaluator, AsideReportsWhatInlineReportsInOrderFromCopies) {
  const Dataset test = random_test_set(300);
  std::vector<std::vector<float>> weights;
  for (uint64_t seed : {1, 2, 3}) {
    weights.emplace_back(Mlp::kParams);
    Mlp::init(weights.back(), seed);
  }
  std::vector<std::string> inline_lines, aside_lines;
  {
    Evaluator e(0, test, test.count, false, [&](const std::string& l) { inline_lines.push_back(l); });
    for (size_t k = 0; k < weights.size(); ++k) e.submit(weights[k], 0.5 * k, k);
  }
  std::vector<float> params(Mlp::kParams);
  {
    Evaluator e(0, test, test.count, true, [&](const std::string& l) { aside_lines.push_back(l); });
    for (size_t k = 0; k < weights.size(); ++k) {
      params = weights[k];
      e.submit(params, 0.5 * k, k);
      std::fill(params.begin(), params.end(), 0.0f);  // the worker steps on: the snapshot must be a copy
      e.drain();  // (a snapshot waiting behind another would give way to a newer one)
      EXPECT_EQ(aside_lines.size(), k + 1) << "drain() returned before the snapshot was reported";
    }
  }
  ASSERT_EQ(inline_lines.size(), weights.size());
  ASSERT_EQ(aside_lines.size(), weights.size());
  for (size_t k = 0; k < weights.size(); ++k) {
    EXPECT_EQ(without_age(aside_lines[k]), without_age(inline_lines[k])) << "snapshot " << k;
    double age = -1;
    ASSERT_EQ(std::sscanf(aside_lines[k].c_str() + aside_lines[k].rfind(' '), "%lf", &age), 1) << aside_lines[k];
    EXPECT_GE(age, 0.0) << aside_lines[k];
  }
  EXPECT_NE(without_age(inline_lines[0]), without_age(inline_lines[1])) << "the weights did not change the result";
}

// The driver dates an accuracy at its snapshot (now − age) and the worker
// process keeps the last one: both read what the evaluator wrote.
TEST(Evaluator, EvalLinesReadBackAsWritten) {
  const EvalLine e{3, 2.5, 0.8512, 0.41234567890123456, 1234567890123ull, 0.25};
  const auto back = parse_eval_line(format_eval_line(e));
  ASSERT_TRUE(back) << format_eval_line(e);
  EXPECT_EQ(back->worker, 3u);
  EXPECT_EQ(back->epoch, 2.5);
  EXPECT_EQ(back->accuracy, 0.8512);
  EXPECT_EQ(back->loss, e.loss) << "the loss must survive to the last bit";
  EXPECT_EQ(back->step, e.step);
  EXPECT_EQ(back->age_s, 0.25);
  EXPECT_LT(back->virtual_time, 0) << "a worker process's line has no virtual time";
  EvalLine v = e;
  v.virtual_time = 812.25;
  const auto virtual_back = parse_eval_line(format_eval_line(v));
  ASSERT_TRUE(virtual_back) << format_eval_line(v);
  EXPECT_EQ(virtual_back->virtual_time, 812.25);
  EXPECT_EQ(virtual_back->age_s, 0.25);
  EXPECT_FALSE(parse_eval_line("progress 0 50 0.2 1.5 100 100"));
  EXPECT_FALSE(parse_eval_line("eval 0 0.5 0.8 0.4 17")) << "a line without its age";
}

// The final accuracy is the final model's: worker 0 evaluates after every
// worker's last push is in, even when it finishes long before the others
// (worker 1 runs 4x slower), and under SSP with --skip-pulls when it is the
// slow one: its last pull was copied while it was the slowest, and its final
// one, within the bound, served that copy without its own last push.
TEST(TrainingJob, TheLastEvaluationIsOfTheFinalModel) {
  struct Case {
    uint64_t staleness;
    bool skip_pulls;
    uint32_t slow;
  };
  for (const Case k : {Case{kInfiniteStaleness, false, 1}, Case{3, true, 0}}) {
    SCOPED_TRACE(k.skip_pulls ? "SSP(3) skipping pulls, worker 0 slow" : "async, worker 1 slow");
    TrainTest data;
    data.train = random_test_set(1024);
    data.test = random_test_set(200);
    Config c;
    c.transport = "shm";
    c.staleness = k.staleness;
    c.skip_pulls = k.skip_pulls;
    c.secret = test::test_secret();
    ServerOptions serve_on;
    serve_on.exit_when_done = false;  // a third client reads the final model
    test::ServerGroup servers(1, 2, c, serve_on);
    ClientOptions co;
    co.servers = {servers.addresses()};
    co.config = c;
    std::vector<EvalLine> evals;
    std::vector<std::thread> threads;
    for (uint32_t w = 0; w < 2; ++w)
      threads.emplace_back([&, w, co]() mutable {
        co.worker = w;
        WorkerOptions wo;
        wo.worker = w;
        wo.workers = 2;
        wo.epochs = 2;
        wo.evaluate = w == 0;
        wo.evaluate_aside = true;
        wo.straggle = w == k.slow ? 4.0 : 1.0;
        run_worker(co, wo, data, [&](const std::string& line) {
          if (auto e = parse_eval_line(line)) evals.push_back(*e);
        });
      });
    for (auto& t : threads) t.join();
    ASSERT_FALSE(evals.empty());
    co.worker = 0;  // rejoins: its earlier self left
    Client reader(co);
    reader.declare("mlp", Mlp::kParams);
    reader.connect();
    std::vector<float> final_model(Mlp::kParams);
    reader.pull("mlp", final_model);  // a first pull fetches
    Mlp model;
    double loss = 0;
    model.evaluate(final_model, data.test.images.data(), data.test.labels.data(), data.test.count, &loss);
    EXPECT_EQ(evals.back().loss, loss) << "the last evaluation (epoch " << evals.back().epoch
                                       << ") tested a model without the last pushes";
  }
}

// A worker 0 restarted into a job in training (its process died, and a
// supervisor started it again) set its initial weights over the model: the
// job went back to its start without a word. It keeps what the servers hold.
TEST(TrainingJob, ARestartedWorkerZeroKeepsTheModelInTraining) {
  TrainTest data;
  data.train = random_test_set(256);
  data.test = random_test_set(50);
  Config c;
  c.transport = "shm";
  c.staleness = kInfiniteStaleness;
  c.secret = test::test_secret();
  ServerOptions serve_on;
  serve_on.exit_when_done = false;  // a reader and the restarted worker come after the first one left
  test::ServerGroup servers(1, 1, c, serve_on);
  ClientOptions co;
  co.servers = {servers.addresses()};
  co.config = c;
  WorkerOptions wo;
  wo.workers = 1;
  wo.epochs = 1;
  wo.evaluate = false;
  run_worker(co, wo, data, [](const std::string&) {});
  auto model = [&] {
    Client reader(co);  // worker 0 again: its earlier self left
    reader.declare("mlp", Mlp::kParams);
    reader.connect();
    std::vector<float> params(Mlp::kParams);
    reader.pull("mlp", params);
    return params;
  };
  const std::vector<float> trained = model();
  {
    TrainingWorker restarted(co, wo, data, [](const std::string&) {});
    restarted.connect();
  }
  EXPECT_EQ(model(), trained) << "the restarted worker 0 set its initial weights over the trained model";
}

// Tests slower than steps do not pile up copies: behind the one under test,
// only the newest snapshot waits, and it (the final model, at the end) is
// always tested.
TEST(Evaluator, ASlowTestKeepsOnlyTheNewestSnapshotWaiting) {
  const Dataset test = random_test_set(50);
  std::vector<float> params(Mlp::kParams);
  Mlp::init(params, 1);
  std::promise<void> entered, release;
  std::shared_future<void> go = release.get_future().share();
  std::vector<uint64_t> steps;
  Evaluator e(0, test, test.count, true, [&](const std::string& line) {
    if (steps.empty()) {
      entered.set_value();
      go.wait();
    }
    steps.push_back(parse_eval_line(line)->step);
  });
  e.submit(params, 0, 0);
  entered.get_future().wait();  // step 0 is under test and stays there
  for (uint64_t k = 1; k <= 50; ++k) e.submit(params, 0, k);
  release.set_value();
  e.drain();
  EXPECT_EQ(steps, (std::vector<uint64_t>{0, 50}));
}

// A test pass on its own thread: the worker's submit() returns while the
// evaluation is still running (here: its report cannot finish until then).
TEST(Evaluator, SubmitAsideDoesNotWaitForTheTestPass) {
  const Dataset test = random_test_set(50);
  std::vector<float> params(Mlp::kParams);
  Mlp::init(params, 1);
  std::promise<void> submitted;
  std::shared_future<void> go = submitted.get_future().share();
  std::atomic<bool> waited_out{false};
  Evaluator e(0, test, test.count, true, [&](const std::string&) {
    waited_out = go.wait_for(std::chrono::seconds(30)) != std::future_status::ready;
  });
  e.submit(params, 0, 0);
  submitted.set_value();
  e.drain();
  EXPECT_FALSE(waited_out) << "submit() returned only after the evaluation was reported";
}

TEST(Straggler, TheStragglingWorkerReallyRunsSlower) {
  // Enough steps that straggling, not start-up, dominates.
  auto ends = run_two_workers(4096, 2, [](uint32_t w, WorkerOptions& wo) { wo.straggle = w == 1 ? 4.0 : 1.0; });
  EXPECT_GE(ends[1].wall_s, 3.0 * ends[1].compute_s) << "a 4x straggler sleeps 3x its compute time after each step";
  // The other worker waits for it at the end (the last evaluation is of the final model): count its time without.
  const double other_s = ends[0].wall_s - ends[0].clock_wait_s;
  EXPECT_GE(ends[1].wall_s, 1.5 * other_s)
      << "the straggler (" << ends[1].wall_s << " s) was not slower than the other worker (" << other_s << " s)";
}

// The driver hands --straggler to each worker process as text: the factor
// went with 6 decimals (1.0000004 arrived as 1, and nothing straggled).
TEST(Straggler, ItsFactorReachesTheWorkerProcessesExactly) {
  for (const double factor : {1.0000004, 4.0, 1.5, 999.999999999}) {
    const std::string text = Straggler{1, false, factor}.to_string();
    EXPECT_EQ(text.substr(0, 2), "1:");
    EXPECT_EQ(std::stod(text.substr(2)), factor) << text;
  }
  EXPECT_EQ((Straggler{-1, true, 2.0}).to_string(), "random:2");
}

// --straggler random:F: every worker straggles, each step with the given
// chance, drawn from its own seeded stream (so runs repeat).
TEST(Straggler, ARandomStragglerSlowsAboutTheGivenShareOfSteps) {
  auto ends = run_two_workers(2048, 4, [](uint32_t, WorkerOptions& wo) {
    wo.straggle = 1.5;
    wo.straggle_chance = 0.25;
  });
  for (uint32_t w = 0; w < 2; ++w) {
    ASSERT_EQ(ends[w].steps, 64u) << "worker " << w;
    // 64 draws at 1/4: 16 expected; 5..27 is more than 3.5 standard deviations either side.
    EXPECT_GE(ends[w].straggled, 5u) << "worker " << w << " hardly ever straggled";
    EXPECT_LE(ends[w].straggled, 27u) << "worker " << w << " straggled far more often than 1 step in 4";
  }
}

// Plays a schedule to its end; after every step checks who pulled against
// the client's SSP rule, written out here on its own: after clock c a worker
// starts its next step once every worker still stepping reached c - bound,
// and not before.
struct Played {
  std::vector<uint64_t> staleness;
  double time = 0;
  uint64_t straggled = 0, max_lead = 0;  // max_lead: clocks ahead of the slowest, at a pull
};
Played play(uint32_t workers, uint64_t steps, uint64_t bound, Straggler straggler, DelaySpec delay = {}) {
  StepSchedule s(workers, delay, 7, bound, straggler);
  std::vector<uint64_t> clock(workers, 0);
  std::vector<bool> waiting(workers, false);
  Played out;
  const auto slowest = [&] {
    uint64_t m = UINT64_MAX;
    for (uint32_t w = 0; w < workers; ++w)
      if (clock[w] < steps) m = std::min(m, clock[w]);
    return m;
  };
  const auto may_go = [&](uint32_t w) {
    return bound == UINT64_MAX || clock[w] <= bound || slowest() >= clock[w] - bound;
  };
  while (!s.done()) {
    const uint32_t k = s.next();
    ++clock[k];
    const auto pulling = s.stepped(clock[k] < steps);
    std::vector<bool> pulled(workers, false);
    for (uint32_t p : pulling) {
      EXPECT_TRUE(p == k || waiting[p]) << "worker " << p << " pulled twice";
      EXPECT_TRUE(may_go(p)) << "worker " << p << " at clock " << clock[p] << " went on; the slowest is at "
                             << slowest() << ", the bound " << bound;
      pulled[p] = true;
      waiting[p] = false;
      if (slowest() != UINT64_MAX) out.max_lead = std::max(out.max_lead, clock[p] - slowest());
    }
    if (clock[k] < steps && !pulled[k]) waiting[k] = true;
    for (uint32_t w = 0; w < workers; ++w) {
      if (waiting[w]) {
        EXPECT_FALSE(may_go(w)) << "worker " << w << " at clock " << clock[w] << " is held needlessly";
      }
    }
  }
  for (uint32_t w = 0; w < workers; ++w) EXPECT_EQ(clock[w], steps) << "worker " << w << " did not finish";
  out.staleness = s.staleness();
  out.time = s.time();
  out.straggled = s.straggled();
  return out;
}

// BSP (bound 0): every round all four push, then all pull, so the k-th
// push of a round is k stale, in every round.
TEST(StepSchedule, BspMakesEachRoundZeroToNMinusOneStale) {
  const Played p = play(4, 50, 0, {});
  EXPECT_EQ(p.staleness, (std::vector<uint64_t>{50, 50, 50, 50}));
  EXPECT_EQ(p.max_lead, 0u);
  EXPECT_DOUBLE_EQ(p.time, 49.75) << "a round takes one step time (the first: the stagger's 3 ticks)";
}

// SSP with a worker 4x slower: the others run at most `bound` clocks ahead
// of it and wait there, so every push is at most 3 * (bound + 1) stale; fully
// asynchronous the three do four steps each in every step of the
// straggler's, which makes its pushes 12 stale. Either way the job ends when
// the straggler does: 50 steps of 4 step times.
TEST(StepSchedule, TheBoundHoldsTheFastWorkersAtAPersistentStraggler) {
  for (uint64_t bound : {uint64_t{0}, uint64_t{1}, uint64_t{2}}) {
    const Played p = play(4, 50, bound, {1, false, 4.0});
    EXPECT_LE(p.staleness.size() - 1, 3 * (bound + 1)) << "bound " << bound;
    EXPECT_LE(p.max_lead, bound) << "bound " << bound;
    EXPECT_DOUBLE_EQ(p.time, (1 + 16 * 50 - 4) / 4.0) << "bound " << bound;
    EXPECT_EQ(p.straggled, 50u);
  }
  const Played async = play(4, 50, UINT64_MAX, {1, false, 4.0});
  EXPECT_EQ(async.staleness.size() - 1, 12u);
  EXPECT_DOUBLE_EQ(async.time, (1 + 16 * 50 - 4) / 4.0);
  // A factor that rounds to the step's own 4 ticks slows nothing, and no step counts as straggled.
  const Played rounded = play(4, 50, UINT64_MAX, {1, false, 1.1});
  EXPECT_EQ(rounded.straggled, 0u);
  EXPECT_DOUBLE_EQ(rounded.time, play(4, 50, UINT64_MAX, {}).time);
}

// A random straggler (each step 4x slower with chance 1/4) and a geometric
// delay: the rule holds at every step, and a looser bound never takes longer.
TEST(StepSchedule, RandomStragglersKeepTheRuleAndALooserBoundIsNeverSlower) {
  double before = 1e300;
  for (uint64_t bound : {uint64_t{0}, uint64_t{1}, uint64_t{3}, uint64_t{8}, UINT64_MAX}) {
    const Played p = play(8, 200, bound, {-1, true, 4.0}, {DelaySpec::Kind::kGeometric, 2});
    if (bound != UINT64_MAX) {
      EXPECT_LE(p.max_lead, bound);
    }
    EXPECT_GT(p.straggled, 8u * 200 / 8 / 2) << "about one step in 8 should be slow";
    EXPECT_LT(p.straggled, 8u * 200 / 8 * 2);
    EXPECT_LE(p.time, before) << "bound " << bound;
    before = p.time;
  }
}

}  // namespace
}  // namespace rdmaps::train
