#include "agents/pipeline/worker.h"

#include <capnp/serialize.h>
#include <spdlog/spdlog.h>

#include <zmq_addon.hpp>

#include "agents/pipeline/internal/turn_wire.h"
#include "common/endpoint.h"
#include "schemas/wire.h"

namespace kvcomm::pipeline {
namespace {

constexpr std::chrono::milliseconds kPollInterval{100};

zmq::message_t ErrorReply(uint64_t id, const Status& status) {
  capnp::MallocMessageBuilder message;
  auto reply = message.initRoot<proto::TurnReply>();
  reply.setId(id);
  auto error = reply.initError();
  error.setCode(static_cast<proto::ErrorCode>(status.code()));
  error.setMessage(std::string(status.message()));
  return wire::ToFrame(message);
}

}  // namespace

AgentWorker::AgentWorker(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
                         WorkerOptions options)
    : model_(model), tokenizer_(tokenizer), options_(std::move(options)) {}

Result<TurnResult> AgentWorker::RunTurn(const TurnRequest& request, const ExecutorOptions& options,
                                        const std::string& name_space) {
  const SessionKey key{options.mode == Mode::kDense ? "" : name_space, options.mode,
                       options.measure_fidelity, options.bases_after_reply,
                       options.true_context_anchors};
  auto it = sessions_.find(key);
  std::string daemon_error;
  if (it == sessions_.end()) {
    Session session;
    if (options.mode != Mode::kDense) {
      client::ClientOptions connect;
      connect.endpoint = options_.daemon_endpoint;
      connect.client_name = "kvcomm-agent";
      connect.name_space = name_space;
      connect.model = model_.fingerprint();
      connect.timeout = options_.daemon_timeout;
      auto daemon = client::Client::Connect(connect);
      if (daemon.ok())
        session.daemon = std::move(*daemon);
      else
        daemon_error = daemon.status().ToString();
    }
    if (daemon_error.empty()) {
      session.executor = std::make_unique<LocalExecutor>(
          model_, tokenizer_, options, session.daemon.get(), options_.kv_delivery);
      it = sessions_.emplace(key, std::move(session)).first;
    }
  }
  ++turns_served_;
  if (it != sessions_.end()) return it->second.executor->Run(request);
  // No kvcommd: this turn runs in full; the next one tries to connect again.
  spdlog::warn("kvcomm-agent: kvcommd unreachable, turn of task '{}' runs dense: {}",
               request.task_id, daemon_error);
  LocalExecutor dense(model_, tokenizer_);
  KVCOMM_ASSIGN_OR_RETURN(auto turn, dense.Run(request));
  turn.fallback = true;
  turn.daemon_error = daemon_error;
  return turn;
}

Status AgentWorker::Serve(const std::string& endpoint, const std::atomic<bool>& stop) {
  KVCOMM_RETURN_IF_ERROR(ValidateEndpoint(endpoint));
  KVCOMM_RETURN_IF_ERROR(PrepareEndpoint(endpoint));
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::router);
  try {
    socket.set(zmq::sockopt::maxmsgsize, int64_t{64} << 20);  // prompts are text: 64 MiB is ample
    socket.set(zmq::sockopt::linger, 1000);
    socket.bind(endpoint);
  } catch (const zmq::error_t& e) {
    return Error(ErrorCode::kUnavailable, "cannot bind {}: {}", endpoint, e.what());
  }
  spdlog::info("kvcomm-agent listening endpoint={} model={}", endpoint, model_.config().model_type);
  std::vector<zmq::message_t> frames;
  while (!stop.load()) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, kPollInterval);
    if (!(item.revents & ZMQ_POLLIN)) continue;
    frames.clear();
    if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
      continue;
    if (frames.size() != 2) continue;  // [routing id, request]: anything else has no answer
    zmq::message_t reply;
    uint64_t id = 0;
    wire::AlignedFrame aligned(frames[1]);
    if (!aligned.status().ok()) {
      reply = ErrorReply(0, aligned.status());
    } else {
      try {
        capnp::FlatArrayMessageReader reader(aligned.words(), wire::ReaderLimits(frames[1].size()));
        auto request = reader.getRoot<proto::TurnRequest>();
        id = request.getId();
        auto turn = internal::ReadTurnRequest(request);
        Result<TurnResult> result = turn.ok()
                                        ? RunTurn(turn->request, turn->options, turn->name_space)
                                        : Result<TurnResult>(turn.status());
        if (result.ok()) {
          capnp::MallocMessageBuilder message;
          auto out = message.initRoot<proto::TurnReply>();
          out.setId(id);
          internal::WriteTurnStats(out.initTurn(), *result);
          reply = wire::ToFrame(message);
        } else {
          reply = ErrorReply(id, result.status());
        }
      } catch (const kj::Exception& e) {
        reply = ErrorReply(id, Error(ErrorCode::kMalformedMessage, "malformed turn request: {}",
                                     e.getDescription().cStr()));
      }
    }
    std::array<zmq::message_t, 2> out{std::move(frames[0]), std::move(reply)};
    zmq::send_multipart(socket, out);
  }
  return Status();
}

}  // namespace kvcomm::pipeline
