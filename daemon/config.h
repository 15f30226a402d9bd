// kvcommd configuration: defaults, a TOML file, then command-line flags, in that order of
// precedence (lowest first). Validate() names the offending setting.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "daemon/anchor_pool.h"
#include "daemon/device_leases.h"
#include "daemon/reuse_checks.h"
#include "kvstore/store.h"

namespace kvcomm::daemon {

struct ServerConfig {
  std::string endpoint;                       // ipc://PATH or tcp://HOST:PORT
  uint32_t workers = 4;                       // request-handling threads
  uint64_t max_request_bytes = 256ull << 20;  // all frames of one request
  uint32_t max_sessions = 4096;               // client sessions kept (LRU beyond)
  std::string log_level = "info";

  Status Validate() const;
};

struct DaemonConfig {
  ServerConfig server;
  kvstore::StoreOptions store;
  AnchorPoolConfig anchors;
  ReuseCheckConfig checks;
  LeaseConfig ipc;  // device delivery of KV to workers on this GPU

  // Defaults: an ipc:// socket in the runtime directory and a data directory in the user's
  // state directory.
  static DaemonConfig Defaults();
  // Overlays the settings present in the TOML file; unknown keys are errors.
  Status MergeTomlFile(const std::string& path);
  Status Validate() const;
};

// "1048576", "64KiB", "1.5GiB", "512MB" (decimal) -> bytes.
Result<uint64_t> ParseByteSize(std::string_view text);

}  // namespace kvcomm::daemon
