// Runs turns on a kvcomm-agent worker (worker.h) over ZeroMQ: the pipeline driver renders the
// prompts, the worker owns the model and the reuse. A worker that does not answer in time is an
// Unavailable error for the turn (the task fails with the worker named; nothing is retried, so a
// turn never runs twice).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "agents/pipeline/turn.h"

namespace kvcomm::pipeline {

class RemoteExecutor final : public TurnExecutor {
 public:
  // `name_space`: the kvcommd namespace the worker reuses in (reuse modes).
  RemoteExecutor(std::string endpoint, ExecutorOptions options, std::string name_space,
                 std::chrono::milliseconds timeout = std::chrono::minutes(5));
  ~RemoteExecutor() override;
  Result<TurnResult> Run(const TurnRequest& request) override;

 private:
  class Socket;
  std::string endpoint_;
  ExecutorOptions options_;
  std::string name_space_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Socket> socket_;
  uint64_t next_id_ = 1;
};

}  // namespace kvcomm::pipeline
