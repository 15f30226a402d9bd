#include "agents/pipeline/remote_executor.h"

#include <capnp/serialize.h>

#include <zmq_addon.hpp>

#include "agents/pipeline/internal/turn_wire.h"
#include "schemas/wire.h"

namespace kvcomm::pipeline {

class RemoteExecutor::Socket {
 public:
  explicit Socket(const std::string& endpoint)
      : context_(1), socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  // Waits for `events` until `deadline`.
  bool Wait(short events, std::chrono::steady_clock::time_point deadline) {
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) left = std::chrono::milliseconds(0);
      zmq::pollitem_t item{socket_.handle(), 0, events, 0};
      zmq::poll(&item, 1, left);
      if (item.revents & events) return true;
      if (left.count() == 0) return false;
    }
  }
  zmq::socket_t& get() { return socket_; }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
};

RemoteExecutor::RemoteExecutor(std::string endpoint, ExecutorOptions options,
                               std::string name_space, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)),
      options_(options),
      name_space_(std::move(name_space)),
      timeout_(timeout) {}

RemoteExecutor::~RemoteExecutor() = default;

Result<TurnResult> RemoteExecutor::Run(const TurnRequest& request) {
  KVCOMM_RETURN_IF_ERROR(request.Validate());
  if (!socket_) socket_ = std::make_unique<Socket>(endpoint_);
  const uint64_t id = next_id_++;
  capnp::MallocMessageBuilder message;
  internal::WriteTurnRequest(message.initRoot<proto::TurnRequest>(), id,
                             {request, options_, name_space_});
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto unavailable = [&](std::string_view what) {
    socket_.reset();  // a late reply must not be taken for the next turn's
    return Error(ErrorCode::kUnavailable, "kvcomm-agent at {} {} (task '{}', agent '{}')",
                 endpoint_, what, request.task_id, request.agent);
  };
  if (!socket_->Wait(ZMQ_POLLOUT, deadline) ||
      !socket_->get().send(wire::ToFrame(message), zmq::send_flags::dontwait))
    return unavailable("is not reachable");
  while (true) {
    if (!socket_->Wait(ZMQ_POLLIN, deadline))
      return unavailable(fmt::format("did not answer within {} s", timeout_.count() / 1000.0));
    zmq::message_t frame;
    if (!socket_->get().recv(frame, zmq::recv_flags::dontwait)) continue;
    wire::AlignedFrame aligned(frame);
    if (!aligned.status().ok()) return aligned.status();
    try {
      capnp::FlatArrayMessageReader reader(aligned.words(), wire::ReaderLimits(frame.size()));
      auto reply = reader.getRoot<proto::TurnReply>();
      if (reply.getId() != id) continue;  // not ours (cannot happen on a fresh socket)
      if (reply.isError()) {
        auto error = reply.getError();
        const auto code = static_cast<ErrorCode>(error.getCode());
        return Error(code == ErrorCode::kOk || code > ErrorCode::kMalformedMessage
                         ? ErrorCode::kInternal
                         : code,
                     "kvcomm-agent at {}: {}", endpoint_, error.getMessage().cStr());
      }
      return internal::ReadTurnStats(reply.getTurn());
    } catch (const kj::Exception& e) {
      return Error(ErrorCode::kMalformedMessage, "malformed reply from kvcomm-agent at {}: {}",
                   endpoint_, e.getDescription().cStr());
    }
  }
}

}  // namespace kvcomm::pipeline
