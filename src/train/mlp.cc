#include "src/train/mlp.h"

#include <cmath>
#include <cstddef>
#include <mutex>
#include <random>

namespace rdmaps::train {

namespace {
using Mat = Eigen::Map<Eigen::MatrixXf>;
using CMat = Eigen::Map<const Eigen::MatrixXf>;
using Vec = Eigen::Map<Eigen::VectorXf>;
using CVec = Eigen::Map<const Eigen::VectorXf>;

// Offsets of each layer's weights (out x in, column-major) and biases.
constexpr size_t kW1 = 0, kB1 = kW1 + size_t{Mlp::kH1} * Mlp::kIn, kW2 = kB1 + Mlp::kH1,
                 kB2 = kW2 + size_t{Mlp::kH2} * Mlp::kH1, kW3 = kB2 + Mlp::kH2,
                 kB3 = kW3 + size_t{Mlp::kOut} * Mlp::kH2;
}  // namespace

void pin_eigen_blocking() {
  Eigen::setCpuCacheSizes(std::ptrdiff_t{48} << 10, std::ptrdiff_t{2} << 20, std::ptrdiff_t{260} << 20);
}

Mlp::Mlp() {
  static std::once_flag pinned;
  std::call_once(pinned, pin_eigen_blocking);
}

void Mlp::init(std::span<float> params, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto fill = [&](size_t offset, int out, int in) {
    std::normal_distribution<float> normal(0.0f, std::sqrt(2.0f / static_cast<float>(in)));
    for (size_t i = 0; i < size_t(out) * in; ++i) params[offset + i] = normal(rng);
  };
  std::fill(params.begin(), params.end(), 0.0f);
  fill(kW1, kH1, kIn);
  fill(kW2, kH2, kH1);
  fill(kW3, kOut, kH2);
}

void Mlp::forward(std::span<const float> p, const float* images, size_t batch) {
  const auto b = static_cast<Eigen::Index>(batch);
  CMat x(images, kIn, b);
  h1_.noalias() = CMat(p.data() + kW1, kH1, kIn) * x;
  h1_.colwise() += CVec(p.data() + kB1, kH1);
  h1_ = h1_.cwiseMax(0.0f);
  h2_.noalias() = CMat(p.data() + kW2, kH2, kH1) * h1_;
  h2_.colwise() += CVec(p.data() + kB2, kH2);
  h2_ = h2_.cwiseMax(0.0f);
  p_.noalias() = CMat(p.data() + kW3, kOut, kH2) * h2_;
  p_.colwise() += CVec(p.data() + kB3, kOut);
  // Softmax per column, shifted by the column max for stability.
  Eigen::RowVectorXf max = p_.colwise().maxCoeff();
  p_ = (p_.rowwise() - max).array().exp();
  Eigen::RowVectorXf sum = p_.colwise().sum();
  p_.array().rowwise() /= sum.array();
}

float Mlp::loss_and_gradient(std::span<const float> p, const float* images, const uint8_t* labels, size_t batch,
                             std::span<float> grad) {
  forward(p, images, batch);
  const auto b = static_cast<Eigen::Index>(batch);
  double loss = 0;
  for (Eigen::Index j = 0; j < b; ++j) loss -= std::log(std::max(p_(labels[j], j), 1e-30f));
  // d loss / d logits = (softmax - onehot) / batch
  for (Eigen::Index j = 0; j < b; ++j) p_(labels[j], j) -= 1.0f;
  p_ /= static_cast<float>(batch);
  Mat(grad.data() + kW3, kOut, kH2).noalias() = p_ * h2_.transpose();
  Vec(grad.data() + kB3, kOut) = p_.rowwise().sum();
  d2_.noalias() = CMat(p.data() + kW3, kOut, kH2).transpose() * p_;
  d2_ = (h2_.array() > 0.0f).select(d2_, 0.0f);
  Mat(grad.data() + kW2, kH2, kH1).noalias() = d2_ * h1_.transpose();
  Vec(grad.data() + kB2, kH2) = d2_.rowwise().sum();
  d1_.noalias() = CMat(p.data() + kW2, kH2, kH1).transpose() * d2_;
  d1_ = (h1_.array() > 0.0f).select(d1_, 0.0f);
  Mat(grad.data() + kW1, kH1, kIn).noalias() = d1_ * CMat(images, kIn, b).transpose();
  Vec(grad.data() + kB1, kH1) = d1_.rowwise().sum();
  return static_cast<float>(loss / static_cast<double>(batch));
}

size_t Mlp::evaluate(std::span<const float> p, const float* images, const uint8_t* labels, size_t count,
                     double* mean_loss) {
  constexpr size_t kChunk = 1000;
  size_t correct = 0;
  double loss = 0;
  for (size_t start = 0; start < count; start += kChunk) {
    size_t n = std::min(kChunk, count - start);
    forward(p, images + start * kIn, n);
    for (size_t j = 0; j < n; ++j) {
      Eigen::Index best;
      p_.col(static_cast<Eigen::Index>(j)).maxCoeff(&best);
      correct += best == labels[start + j];
      loss -= std::log(std::max(p_(labels[start + j], static_cast<Eigen::Index>(j)), 1e-30f));
    }
  }
  if (mean_loss) *mean_loss = count ? loss / static_cast<double>(count) : 0;
  return correct;
}

}  // namespace rdmaps::train
