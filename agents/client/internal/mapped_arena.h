// This process's mapping of kvcommd's lease arena (device delivery of KV through CUDA IPC).
// Internal to agents/client.
#pragma once

#include <memory>

#include "kernels/device.h"
#include "schemas/kvcomm.capnp.h"

namespace kvcomm::client::internal {

struct MappedArena {
  uint64_t id = 0, bytes = 0;
  kernels::IpcMapping mapping;
};

// The arena a plan's reply names, mapped once per arena id (kvcommd restarted: mapped again).
// Fails when kvcommd's GPU is not this process's.
Result<const MappedArena*> MapArena(std::unique_ptr<MappedArena>& arena,
                                    proto::DeviceArena::Reader described);
// Where a lease kvcommd named lies in this process's mapping; kMalformedMessage unless it holds
// `bytes` (what `what` needs) inside the arena.
Result<std::byte*> LeaseAddress(const MappedArena& arena, proto::DeviceLease::Reader lease,
                                uint64_t bytes, std::string_view what);

}  // namespace kvcomm::client::internal
