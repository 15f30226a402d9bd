// DeviceLeases: blocks of one device arena lent to agent workers on kvcommd's GPU. The daemon
// writes a segment's KV into a block; the worker, which mapped the arena once through its CUDA
// IPC handle, reads it in place and releases the lease. KV then never crosses the host
// (DESIGN.md, "Scale"). A lease not released within its time to live is reclaimed, so a worker
// that dies cannot pin memory.
//
// Thread-safe (one mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "common/arena_allocator.h"
#include "common/status.h"
#include "kernels/device.h"

namespace kvcomm::daemon {

struct LeaseConfig {
  uint64_t arena_bytes = 0;  // 0: no arena, device delivery refused
  uint32_t ttl_ms = 30000;
  Status Validate() const;
};

class DeviceLeases {
 public:
  using Clock = std::chrono::steady_clock;

  static Result<std::unique_ptr<DeviceLeases>> Create(const LeaseConfig& config);

  struct Lease {
    uint64_t id = 0;
    uint64_t offset = 0;  // in the arena
    uint64_t bytes = 0;
    std::byte* data = nullptr;  // device address in this process
  };
  // A block of `bytes`, reclaiming expired leases first if need be; kResourceExhausted if none
  // fits.
  Result<Lease> Acquire(uint64_t bytes);
  // kNotFound for an id that is unknown, released or expired.
  Status Release(uint64_t id);
  // A held lease (its deadline unchanged); kNotFound as for Release.
  Result<Lease> Find(uint64_t id) const;

  const std::string& ipc_handle() const { return ipc_handle_; }
  const std::string& device_uuid() const { return device_uuid_; }
  // Random per arena: a worker that mapped an earlier daemon's arena knows to map again.
  uint64_t arena_id() const { return arena_id_; }
  uint64_t capacity() const { return allocator_.capacity(); }
  uint64_t leased_bytes() const;
  size_t active() const;
  uint64_t expired() const;

 private:
  DeviceLeases(const LeaseConfig& config, kernels::DeviceBuffer arena);
  void ReclaimExpired(Clock::time_point now);  // mutex_ held

  struct Held {
    uint64_t offset, bytes;
    Clock::time_point deadline;
  };
  const std::chrono::milliseconds ttl_;
  kernels::DeviceBuffer arena_;
  std::string ipc_handle_, device_uuid_;
  uint64_t arena_id_ = 0;
  mutable std::mutex mutex_;
  ArenaAllocator allocator_;
  std::map<uint64_t, Held> held_;
  std::mt19937_64 ids_;
  uint64_t expired_ = 0;
};

}  // namespace kvcomm::daemon
