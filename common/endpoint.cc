#include "common/endpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace kvcomm {

std::string DefaultEndpoint() {
  const char* configured = std::getenv("KVCOMM_ENDPOINT");
  if (configured != nullptr && *configured != '\0') return configured;
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  std::string dir = runtime != nullptr && *runtime != '\0'
                        ? std::string(runtime) + "/kvcomm"
                        : fmt::format("/tmp/kvcomm-{}", ::getuid());
  return "ipc://" + dir + "/kvcommd.sock";
}

Status ValidateEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0) {
    if (endpoint.size() <= 6) return InvalidArgument("endpoint '{}' has no socket path", endpoint);
    if (endpoint.size() - 6 > 100) {
      return InvalidArgument("endpoint '{}': ipc socket paths are limited to 100 characters",
                             endpoint);
    }
    return Status::Ok();
  }
  if (endpoint.rfind("tcp://", 0) == 0) {
    auto colon = endpoint.rfind(':');
    if (colon <= 5 || colon + 1 >= endpoint.size()) {
      return InvalidArgument("endpoint '{}' must be tcp://HOST:PORT", endpoint);
    }
    return Status::Ok();
  }
  return InvalidArgument("endpoint '{}' must start with ipc:// or tcp://", endpoint);
}

Status PrepareEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) != 0) return Status::Ok();
  std::filesystem::path socket(endpoint.substr(6));
  std::error_code ec;
  if (socket.has_parent_path()) std::filesystem::create_directories(socket.parent_path(), ec);
  if (ec) {
    return Error(ErrorCode::kInternal, "cannot create socket directory '{}': {}",
                 socket.parent_path().string(), ec.message());
  }
  return Status::Ok();
}

}  // namespace kvcomm
