#include "daemon/device_leases.h"

#include <spdlog/spdlog.h>

namespace kvcomm::daemon {

Status LeaseConfig::Validate() const {
  if (ttl_ms == 0) return InvalidArgument("ipc.lease_ttl_ms must be at least 1");
  return Status::Ok();
}

Result<std::unique_ptr<DeviceLeases>> DeviceLeases::Create(const LeaseConfig& config) {
  KVCOMM_RETURN_IF_ERROR(config.Validate());
  if (config.arena_bytes == 0) return InvalidArgument("ipc.arena is 0: no lease arena");
  if (!kernels::CudaAvailable())
    return Error(ErrorCode::kUnavailable, "ipc.arena is set but there is no GPU: {}",
                 kernels::CudaDeviceDescription());
  KVCOMM_ASSIGN_OR_RETURN(auto arena, kernels::DeviceBuffer::Allocate(config.arena_bytes));
  std::unique_ptr<DeviceLeases> leases(new DeviceLeases(config, std::move(arena)));
  KVCOMM_ASSIGN_OR_RETURN(leases->ipc_handle_, kernels::ExportIpcHandle(leases->arena_));
  KVCOMM_ASSIGN_OR_RETURN(leases->device_uuid_, kernels::CudaDeviceUuid());
  return leases;
}

DeviceLeases::DeviceLeases(const LeaseConfig& config, kernels::DeviceBuffer arena)
    : ttl_(config.ttl_ms),
      arena_(std::move(arena)),
      allocator_(config.arena_bytes),
      ids_(std::random_device{}()) {
  arena_id_ = ids_();
}

void DeviceLeases::ReclaimExpired(Clock::time_point now) {
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    allocator_.Free(it->second.offset);
    ++expired_;
    spdlog::warn("lease {} of {} bytes expired unreleased", it->first, it->second.bytes);
    it = held_.erase(it);
  }
}

Result<DeviceLeases::Lease> DeviceLeases::Acquire(uint64_t bytes) {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  auto offset = allocator_.Allocate(bytes);
  if (!offset) {
    ReclaimExpired(now);
    offset = allocator_.Allocate(bytes);
  }
  if (!offset) {
    return Error(ErrorCode::kResourceExhausted,
                 "the lease arena has no free block of {} bytes ({} of {} bytes leased in {} "
                 "leases)",
                 bytes, allocator_.allocated_bytes(), allocator_.capacity(), held_.size());
  }
  uint64_t id = 0;
  while (id == 0 || held_.contains(id)) id = ids_();
  held_[id] = {*offset, bytes, now + ttl_};
  return Lease{id, *offset, bytes, arena_.data() + *offset};
}

Status DeviceLeases::Release(uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = held_.find(id);
  if (it == held_.end())
    return Error(ErrorCode::kNotFound, "no lease {} (released already, expired or never given)",
                 id);
  allocator_.Free(it->second.offset);
  held_.erase(it);
  return Status::Ok();
}

Result<DeviceLeases::Lease> DeviceLeases::Find(uint64_t id) const {
  std::lock_guard lock(mutex_);
  auto it = held_.find(id);
  if (it == held_.end() || it->second.deadline <= Clock::now())
    return Error(ErrorCode::kNotFound, "no lease {} (released already, expired or never given)",
                 id);
  return Lease{id, it->second.offset, it->second.bytes, arena_.data() + it->second.offset};
}

uint64_t DeviceLeases::leased_bytes() const {
  std::lock_guard lock(mutex_);
  return allocator_.allocated_bytes();
}

size_t DeviceLeases::active() const {
  std::lock_guard lock(mutex_);
  return held_.size();
}

uint64_t DeviceLeases::expired() const {
  std::lock_guard lock(mutex_);
  return expired_;
}

}  // namespace kvcomm::daemon
