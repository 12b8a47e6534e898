#include "src/train/worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <thread>

#include "rdmaps/error.h"
#include "src/train/mlp.h"

namespace rdmaps::train {

using Clock = std::chrono::steady_clock;

void run_worker(const ClientOptions& client_options, const WorkerOptions& o, const TrainTest& data,
                const Report& report) {
  const size_t train_n = o.train_limit ? std::min(o.train_limit, data.train.count) : data.train.count;
  const size_t test_n = o.test_limit ? std::min(o.test_limit, data.test.count) : data.test.count;
  // This worker's partition of one fixed shuffle of the training set.
  std::vector<size_t> order(train_n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(o.seed));
  const size_t per = train_n / o.workers;
  std::vector<size_t> mine(order.begin() + o.worker * per, order.begin() + (o.worker + 1) * per);

  Client client(client_options);
  client.declare("mlp", Mlp::kParams);
  client.connect();
  std::vector<float> params(Mlp::kParams), grad(Mlp::kParams);
  if (o.worker == 0) {
    Mlp::init(params, o.seed);
    client.init("mlp", params);
  }
  client.barrier();  // everyone starts from worker 0's initial weights

  Mlp model;
  std::vector<float> x(size_t{o.batch} * Mlp::kIn);
  std::vector<uint8_t> y(o.batch);
  std::mt19937_64 rng(o.seed * 7919 + o.worker);
  // Its own stream, so straggling does not change which examples a worker sees.
  std::mt19937_64 straggle_rng(o.seed * 104729 + o.worker);
  std::bernoulli_distribution straggles(std::clamp(o.straggle_chance, 0.0, 1.0));
  uint64_t straggled = 0;
  const size_t steps_per_epoch = mine.size() / o.batch;
  const size_t eval_every = std::max<size_t>(1, steps_per_epoch / std::max(1u, o.evals_per_epoch));
  double compute_s = 0;
  uint64_t step = 0;
  auto evaluate = [&](double epoch) {
    client.pull("mlp", params);
    double loss = 0;
    size_t correct = model.evaluate(params, data.test.images.data(), data.test.labels.data(), test_n, &loss);
    char line[160];
    std::snprintf(line, sizeof(line), "eval %.4f %.6f %.6f %llu", epoch, static_cast<double>(correct) / test_n, loss,
                  static_cast<unsigned long long>(step));
    report(line);
  };
  if (o.evaluate) evaluate(0);
  for (uint32_t epoch = 0; epoch < o.epochs; ++epoch) {
    std::shuffle(mine.begin(), mine.end(), rng);
    double loss_sum = 0;
    for (size_t b = 0; b < steps_per_epoch; ++b) {
      for (size_t i = 0; i < o.batch; ++i) {
        size_t idx = mine[b * o.batch + i];
        std::copy_n(data.train.images.data() + idx * Mlp::kIn, Mlp::kIn, x.data() + i * Mlp::kIn);
        y[i] = data.train.labels[idx];
      }
      if (o.cosine) {  // this worker's progress through its own steps
        const double progress = static_cast<double>(step) / static_cast<double>(o.epochs * steps_per_epoch);
        client.set_learning_rate(static_cast<float>(o.lr * (0.05 + 0.95 * 0.5 * (1 + std::cos(M_PI * progress)))));
      }
      client.pull("mlp", params);  // fetched only when staler than the bound allows
      auto t0 = Clock::now();
      const double loss = model.loss_and_gradient(params, x.data(), y.data(), o.batch, grad);
      // Pushing a NaN gradient would ruin every worker's parameters: stop here and say why.
      if (!std::isfinite(loss)) {
        char why[200];
        std::snprintf(why, sizeof(why),
                      "worker %u: the loss is %g at step %llu (epoch %.2f): training diverged; lower --lr or --lambda0",
                      o.worker, loss, static_cast<unsigned long long>(step),
                      epoch + static_cast<double>(b) / steps_per_epoch);
        throw Error(Errc::kInvalidArgument, why);
      }
      loss_sum += loss;
      double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      compute_s += dt;
      client.push("mlp", grad);
      client.clock();
      ++step;
      if (o.straggle > 1.0 && straggles(straggle_rng)) {
        ++straggled;
        std::this_thread::sleep_for(std::chrono::duration<double>((o.straggle - 1.0) * dt));
      }
      if ((b + 1) % 50 == 0) {
        auto stats = client.stats();
        char line[160];
        std::snprintf(line, sizeof(line), "progress %llu %.4f %.5f %llu %llu", static_cast<unsigned long long>(step),
                      epoch + (b + 1.0) / steps_per_epoch, loss_sum / (b + 1),
                      static_cast<unsigned long long>(stats.push_bytes),
                      static_cast<unsigned long long>(stats.pull_bytes));
        report(line);
      }
      if (o.evaluate && (b + 1) % eval_every == 0) evaluate(epoch + (b + 1.0) / steps_per_epoch);
    }
  }
  auto s = client.stats();
  char line[256];
  std::snprintf(line, sizeof(line), "done %llu %llu %llu %llu %llu %.4f %llu", static_cast<unsigned long long>(step),
                static_cast<unsigned long long>(s.push_bytes), static_cast<unsigned long long>(s.pull_bytes),
                static_cast<unsigned long long>(s.pulls), static_cast<unsigned long long>(s.pulls_skipped), compute_s,
                static_cast<unsigned long long>(straggled));
  report(line);
}

}  // namespace rdmaps::train
