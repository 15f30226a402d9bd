// The kvcomm-agent worker: serves agent turns (schemas/worker.capnp) on one model, reusing KV
// through kvcommd in the mode each turn asks for. Several workers may share one kvcommd; a
// pipeline driver reaches them with RemoteExecutor. A worker that cannot reach kvcommd runs the
// turn in full and says so in the reply (fallback), so a lost daemon never stalls a pipeline.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "agents/client/client.h"
#include "agents/pipeline/turn.h"

namespace kvcomm::pipeline {

struct WorkerOptions {
  std::string daemon_endpoint;  // empty: the default kvcommd endpoint
  std::chrono::milliseconds daemon_timeout{10000};
  // kDeviceIpc: kvcomm plans' KV read in place from kvcommd's GPU (a CUDA model on that GPU).
  client::Delivery kv_delivery = client::Delivery::kFrames;
};

class AgentWorker {
 public:
  // Model and tokenizer must outlive the worker.
  AgentWorker(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
              WorkerOptions options = {});

  // Runs one turn with the reuse of `options.mode` in kvcommd namespace `name_space`.
  Result<TurnResult> RunTurn(const TurnRequest& request, const ExecutorOptions& options,
                             const std::string& name_space);
  // Binds `endpoint` and answers turns, one at a time, until `stop` is set. Malformed requests
  // get an error reply (or are dropped when unreadable); they never end the loop.
  Status Serve(const std::string& endpoint, const std::atomic<bool>& stop);

  int64_t turns_served() const { return turns_served_; }

 private:
  struct Session {
    std::unique_ptr<client::Client> daemon;
    std::unique_ptr<LocalExecutor> executor;
  };
  // (namespace, and the ExecutorOptions) -> a kvcommd session and the executor using it.
  using SessionKey = std::tuple<std::string, Mode, bool, bool, bool>;

  const runtime::Model& model_;
  const runtime::Tokenizer& tokenizer_;
  WorkerOptions options_;
  std::map<SessionKey, Session> sessions_;
  int64_t turns_served_ = 0;
};

}  // namespace kvcomm::pipeline
