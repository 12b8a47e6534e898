// `rdmaps-perf transport`: put/get/active-message bandwidth and latency
// between two processes, checked byte for byte, like ucx_perftest.
#pragma once

namespace rdmaps::bench {

int perf_transport_main(int argc, char** argv, int first);

}  // namespace rdmaps::bench
