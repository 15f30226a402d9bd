// DaemonCounters: request-level statistics (the store keeps its own per-tier counters).
// Lock-free; any worker thread may count.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "common/status.h"

namespace kvcomm::daemon {

class DaemonCounters {
 public:
  void CountRequest(uint64_t bytes_in) {
    requests_.fetch_add(1, std::memory_order_relaxed);
    bytes_in_.fetch_add(bytes_in, std::memory_order_relaxed);
  }
  void CountBytesOut(uint64_t bytes) { bytes_out_.fetch_add(bytes, std::memory_order_relaxed); }
  void CountError(ErrorCode code) {
    errors_[static_cast<size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }

  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t bytes_in() const { return bytes_in_.load(std::memory_order_relaxed); }
  uint64_t bytes_out() const { return bytes_out_.load(std::memory_order_relaxed); }
  uint64_t errors(ErrorCode code) const {
    return errors_[static_cast<size_t>(code)].load(std::memory_order_relaxed);
  }
  double uptime_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> bytes_out_{0};
  std::array<std::atomic<uint64_t>, kNumErrorCodes> errors_{};
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace kvcomm::daemon
