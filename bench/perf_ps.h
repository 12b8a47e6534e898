// `rdmaps-perf ps`: push + apply + write-back through real server and worker
// processes, against a stated bound.
#pragma once

namespace rdmaps::bench {

int perf_ps_main(int argc, char** argv, int first);

}  // namespace rdmaps::bench
