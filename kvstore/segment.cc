#include "kvstore/segment.h"

#include <chrono>

namespace kvcomm::kvstore {

std::string_view TierName(TierKind tier) {
  switch (tier) {
    case TierKind::kNone:
      return "none";
    case TierKind::kGpu:
      return "gpu";
    case TierKind::kHost:
      return "host";
    case TierKind::kDisk:
      return "disk";
  }
  return "?";
}

int64_t NowUnixMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace kvcomm::kvstore
