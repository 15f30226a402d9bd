// Built instead of cuda_engine.cc when kvcomm has no CUDA.
#include "agents/runtime/internal/engine.h"

namespace kvcomm::runtime::internal {

Result<std::unique_ptr<Engine>> MakeCudaEngine(const ModelConfig&, const ModelWeights*, uint64_t) {
  return Status(ErrorCode::kUnavailable,
                "kvcomm was built without CUDA (KVCOMM_CUDA=OFF or no nvcc)");
}

}  // namespace kvcomm::runtime::internal
