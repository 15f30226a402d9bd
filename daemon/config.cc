#include "daemon/config.h"

#include <toml++/toml.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "common/endpoint.h"
#include "kernels/device_realign.h"

namespace kvcomm::daemon {
namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

Result<uint64_t> BytesSetting(const toml::node& node, std::string_view key) {
  if (auto i = node.value<int64_t>()) {
    if (*i < 0) return InvalidArgument("{} must not be negative, got {}", key, *i);
    return static_cast<uint64_t>(*i);
  }
  if (auto s = node.value<std::string>()) {
    auto parsed = ParseByteSize(*s);
    if (!parsed.ok()) return parsed.status().WithContext(key);
    return parsed;
  }
  return InvalidArgument("{} must be a byte count or a size string like \"4GiB\"", key);
}

}  // namespace

Result<uint64_t> ParseByteSize(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  std::string number(text.substr(0, i));
  std::string unit(text.substr(i));
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  char* end = nullptr;
  double value = number.empty() ? -1 : std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || value < 0) {
    return InvalidArgument("'{}' is not a size (expected e.g. 1048576, 64MiB, 2GiB)", text);
  }
  double scale = 0;
  if (unit.empty() || unit == "B")
    scale = 1;
  else if (unit == "KiB" || unit == "K")
    scale = 1024.0;
  else if (unit == "MiB" || unit == "M")
    scale = 1024.0 * 1024;
  else if (unit == "GiB" || unit == "G")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "TiB" || unit == "T")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB")
    scale = 1e3;
  else if (unit == "MB")
    scale = 1e6;
  else if (unit == "GB")
    scale = 1e9;
  else if (unit == "TB")
    scale = 1e12;
  else
    return InvalidArgument(
        "'{}' has an unknown unit '{}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", text, unit);
  double bytes = value * scale;
  if (bytes > 1.8e19) return InvalidArgument("'{}' is too large", text);
  return static_cast<uint64_t>(std::llround(bytes));
}

Status ServerConfig::Validate() const {
  KVCOMM_RETURN_IF_ERROR(ValidateEndpoint(endpoint));
  if (workers == 0 || workers > 256)
    return InvalidArgument("workers must be in 1..256, got {}", workers);
  if (max_request_bytes < 4096) {
    return InvalidArgument("max_request_bytes must be at least 4096, got {}", max_request_bytes);
  }
  if (max_sessions == 0) return InvalidArgument("max_sessions must be at least 1");
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    if (log_level == level) return Status::Ok();
  }
  return InvalidArgument(
      "log level '{}' is not one of trace, debug, info, warn, error, critical, off", log_level);
}

DaemonConfig DaemonConfig::Defaults() {
  DaemonConfig config;
  config.server.endpoint = DefaultEndpoint();
  std::string state = EnvOr("XDG_STATE_HOME", EnvOr("HOME", "/tmp") + "/.local/state");
  config.store.data_dir = state + "/kvcomm";
  return config;
}

Status DaemonConfig::Validate() const {
  KVCOMM_RETURN_IF_ERROR(server.Validate());
  KVCOMM_RETURN_IF_ERROR(anchors.Validate());
  KVCOMM_RETURN_IF_ERROR(checks.Validate());
  KVCOMM_RETURN_IF_ERROR(ipc.Validate());
  if (ipc.arena_bytes > 0 && store.gpu_capacity_bytes == 0)
    return InvalidArgument("ipc.arena needs a GPU tier: set store.gpu_capacity too");
  if (ipc.arena_bytes > 0 && anchors.capacity > kernels::DeviceRealigner::kMaxBlendedAnchors)
    return InvalidArgument(
        "with ipc.arena, anchors.capacity can be at most {} (a GPU blend takes "
        "at most that many anchors), got {}",
        kernels::DeviceRealigner::kMaxBlendedAnchors, anchors.capacity);
  return store.Validate();
}

Status DaemonConfig::MergeTomlFile(const std::string& path) {
  toml::table root;
  try {  // Debian's toml++ is built with exceptions: parse errors arrive as toml::parse_error
    root = toml::parse_file(path);
  } catch (const toml::parse_error& err) {
    return InvalidArgument("config {}:{}:{}: {}", path, err.source().begin.line,
                           err.source().begin.column, err.description());
  }
  auto error = [&](std::string_view key, std::string_view what) {
    return InvalidArgument("config {}: '{}' {}", path, key, what);
  };
  for (const auto& [key, node] : root) {
    std::string_view k = key.str();
    if (k == "endpoint" || k == "log_level") {
      auto s = node.value<std::string>();
      if (!s) return error(k, "must be a string");
      (k == "endpoint" ? server.endpoint : server.log_level) = *s;
    } else if (k == "workers" || k == "max_sessions") {
      auto i = node.value<int64_t>();
      if (!i || *i <= 0 || *i > 1'000'000) return error(k, "must be a positive integer");
      (k == "workers" ? server.workers : server.max_sessions) = static_cast<uint32_t>(*i);
    } else if (k == "max_request_bytes") {
      KVCOMM_ASSIGN_OR_RETURN(server.max_request_bytes, BytesSetting(node, k));
    } else if (k == "store") {
      const toml::table* t = node.as_table();
      if (t == nullptr) return error(k, "must be a table");
      for (const auto& [skey, snode] : *t) {
        std::string_view s = skey.str();
        if (s == "host_capacity") {
          KVCOMM_ASSIGN_OR_RETURN(store.host_capacity_bytes, BytesSetting(snode, s));
        } else if (s == "gpu_capacity") {
          KVCOMM_ASSIGN_OR_RETURN(store.gpu_capacity_bytes, BytesSetting(snode, s));
        } else if (s == "disk_capacity") {
          KVCOMM_ASSIGN_OR_RETURN(store.disk_capacity_bytes, BytesSetting(snode, s));
        } else if (s == "persist") {
          auto b = snode.value<bool>();
          if (!b) return error("store.persist", "must be true or false");
          store.persist = *b;
        } else if (s == "data_dir") {
          auto d = snode.value<std::string>();
          if (!d) return error("store.data_dir", "must be a string");
          store.data_dir = *d;
        } else {
          return error(fmt::format("store.{}", s), "is not a known setting");
        }
      }
    } else if (k == "anchors") {
      const toml::table* t = node.as_table();
      if (t == nullptr) return error(k, "must be a table");
      for (const auto& [akey, anode] : *t) {
        std::string_view a = akey.str();
        const std::string name = fmt::format("anchors.{}", a);
        if (a == "capacity" || a == "eviction_window") {
          auto i = anode.value<int64_t>();
          if (!i || *i <= 0 || *i > 1'000'000) return error(name, "must be a positive integer");
          (a == "capacity" ? anchors.capacity : anchors.eviction_window) =
              static_cast<uint32_t>(*i);
        } else if (a == "entropy_threshold" || a == "top_p" || a == "temperature" ||
                   a == "max_relative_distance") {
          auto d = anode.value<double>();
          if (!d) return error(name, "must be a number");
          (a == "entropy_threshold" ? anchors.entropy_threshold
           : a == "top_p"           ? anchors.top_p
           : a == "temperature"     ? anchors.temperature
                                    : anchors.max_relative_distance) = *d;
        } else if (a == "borrow_deltas") {
          const auto* b = anode.as_boolean();  // not value<bool>(): that takes 0 and 1 too
          if (b == nullptr) return error(name, "must be true or false");
          anchors.borrow_deltas = b->get();
        } else {
          return error(name, "is not a known setting");
        }
      }
    } else if (k == "checks") {
      const toml::table* t = node.as_table();
      if (t == nullptr) return error(k, "must be a table");
      for (const auto& [ckey, cnode] : *t) {
        std::string_view c = ckey.str();
        const std::string name = fmt::format("checks.{}", c);
        if (c == "first" || c == "every") {
          auto i = cnode.value<int64_t>();
          if (!i || *i < 0 || *i > 1'000'000)
            return error(name, "must be an integer in 0..1000000");
          (c == "first" ? checks.first : checks.every) = static_cast<uint32_t>(*i);
        } else if (c == "max_changed") {
          auto d = cnode.value<double>();
          if (!d || !(*d >= 0 && *d <= 1)) return error(name, "must be a number in [0, 1]");
          checks.max_changed = *d;
        } else {
          return error(name, "is not a known setting");
        }
      }
    } else if (k == "ipc") {
      const toml::table* t = node.as_table();
      if (t == nullptr) return error(k, "must be a table");
      for (const auto& [ikey, inode] : *t) {
        std::string_view i = ikey.str();
        if (i == "arena") {
          KVCOMM_ASSIGN_OR_RETURN(ipc.arena_bytes, BytesSetting(inode, "ipc.arena"));
        } else if (i == "lease_ttl_ms") {
          auto ms = inode.value<int64_t>();
          if (!ms || *ms <= 0 || *ms > 3'600'000)
            return error("ipc.lease_ttl_ms", "must be an integer in 1..3600000");
          ipc.ttl_ms = static_cast<uint32_t>(*ms);
        } else {
          return error(fmt::format("ipc.{}", i), "is not a known setting");
        }
      }
    } else {
      return error(k, "is not a known setting");
    }
  }
  return Status::Ok();
}

}  // namespace kvcomm::daemon
