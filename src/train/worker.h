// One training worker: its partition of the training set, minibatch SGD
// steps through the parameter servers, periodic test evaluation.
#pragma once

#include <functional>
#include <string>

#include "rdmaps/client.h"
#include "src/train/dataset.h"

namespace rdmaps::train {

struct WorkerOptions {
  uint32_t worker = 0, workers = 1;
  uint32_t epochs = 8;
  uint32_t batch = 64;
  uint64_t seed = 1;
  double straggle = 1.0;         ///< sleep (straggle - 1) x compute time after each step
  double straggle_chance = 1.0;  ///< chance that a step is followed by that sleep (1: every step)
  bool evaluate = false;         ///< this worker measures test accuracy
  uint32_t evals_per_epoch = 2;
  size_t train_limit = 0, test_limit = 0;  ///< use only the first N examples (0 = all)
  float lr = 0.1f;                         ///< base learning rate (the servers' unless cosine)
  bool cosine = false;                     ///< decay lr to 5 % over the run; pushes carry the rate
};

/// Lines for the driver: "progress ...", "eval ...", "done ...".
using Report = std::function<void(const std::string& line)>;

void run_worker(const ClientOptions& client, const WorkerOptions& options, const TrainTest& data, const Report& report);

}  // namespace rdmaps::train
