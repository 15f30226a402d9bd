// Conversions between the worker protocol (schemas/worker.capnp) and the pipeline's turn types,
// shared by RemoteExecutor and the kvcomm-agent worker. Readers validate what they read and
// return a Status naming the bad field; Cap'n Proto accessors may still throw kj::Exception on
// malformed bytes, which both callers catch at the socket.
#pragma once

#include <string>

#include "agents/pipeline/turn.h"
#include "schemas/worker.capnp.h"

namespace kvcomm::pipeline::internal {

// What a worker needs besides the turn: where and how to reuse.
struct WorkerTurn {
  TurnRequest request;
  ExecutorOptions options;
  std::string name_space;
};

void WriteTurnRequest(proto::TurnRequest::Builder out, uint64_t id, const WorkerTurn& turn);
Result<WorkerTurn> ReadTurnRequest(proto::TurnRequest::Reader in);

void WriteTurnStats(proto::TurnStats::Builder out, const TurnResult& turn);
TurnResult ReadTurnStats(proto::TurnStats::Reader in);

}  // namespace kvcomm::pipeline::internal
