// IDX image/label files (MNIST, Fashion-MNIST), gzip'd or plain.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rdmaps::train {

struct Dataset {
  size_t count = 0, rows = 0, cols = 0;
  std::vector<float> images;    ///< count x rows*cols, scaled to [0, 1]
  std::vector<uint8_t> labels;  ///< count, 0..9
  std::string images_path;      ///< the file read: gzip'd or plain, as found
  size_t pixels() const { return rows * cols; }
};

/// Reads an image file and its label file; throws Error naming the file and
/// what was expected (missing, truncated, wrong magic, counts that disagree).
Dataset load_idx(const std::string& images_path, const std::string& labels_path);

struct TrainTest {
  Dataset train, test;
};
/// `dir` holds train-images-idx3-ubyte[.gz] and the other three files.
TrainTest load_dataset_dir(const std::string& dir);
/// Their headers only, checked as load_dataset_dir does (files, magic,
/// shapes, counts); no pixels or labels are read.
TrainTest check_dataset_dir(const std::string& dir);

constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

}  // namespace rdmaps::train
