#include "common/endpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>

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

}  // namespace kvcomm
