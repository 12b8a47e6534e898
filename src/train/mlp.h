// The training job's model: a 784-256-128-10 MLP with ReLU and softmax
// cross-entropy, forward and backward in Eigen over one flat parameter
// vector (so a step is one push and one pull).
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <span>

namespace rdmaps::train {

class Mlp {
 public:
  static constexpr int kIn = 784, kH1 = 256, kH2 = 128, kOut = 10;
  static constexpr size_t kParams = size_t{kH1} * kIn + kH1 + size_t{kH2} * kH1 + kH2 + size_t{kOut} * kH2 + kOut;

  /// Pins Eigen's blocking (the first Mlp does it): see pin_eigen_blocking.
  Mlp();

  /// He-normal weights, zero biases, from `seed`.
  static void init(std::span<float> params, uint64_t seed);

  /// Mean cross-entropy over the batch; writes d(loss)/d(params) into `grad`.
  float loss_and_gradient(std::span<const float> params, const float* images, const uint8_t* labels, size_t batch,
                          std::span<float> grad);
  /// Correct predictions and mean loss over `count` examples.
  size_t evaluate(std::span<const float> params, const float* images, const uint8_t* labels, size_t count,
                  double* mean_loss);

 private:
  void forward(std::span<const float> params, const float* images, size_t batch);
  // Scratch kept between calls: no allocation per step once sized.
  Eigen::MatrixXf h1_, h2_, p_, d2_, d1_;
};

/// Eigen sizes a product's blocks from the CPU caches it detects, and the
/// blocks set the order of each sum: another machine's caches gave other
/// bits for one seed. Sets the sizes Eigen detects on the machine the docs'
/// figures come from (L1 48 KiB, L2 2 MiB, L3 260 MiB), so that a seed gives
/// the same bits on any x86-64 machine. Before any product, on one thread.
void pin_eigen_blocking();

}  // namespace rdmaps::train
