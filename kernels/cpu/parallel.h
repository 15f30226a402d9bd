// ParallelFor: splits [0, n) over a persistent pool of worker threads (one per core by
// default). The CPU reference ops use it for loops that do not go through BLAS.
#pragma once

#include <cstdint>
#include <functional>

namespace kvcomm::kernels::cpu {

// Calls fn(begin, end) on disjoint chunks covering [0, n); returns when all are done.
// Safe to call from several threads (calls are serialised); nested calls run inline.
void ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);
// Threads used (KVCOMM_THREADS overrides the core count).
int ParallelThreads();

}  // namespace kvcomm::kernels::cpu
