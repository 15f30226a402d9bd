// What every request of the client library shares: one round trip to kvcommd and the decoding
// of its reply. Internal to agents/client.
#pragma once

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "schemas/kvcomm.capnp.h"
#include "schemas/wire.h"

namespace kvcomm::client::internal {

class Transport;

// A decoded reply and the frames it refers to.
struct Response {
  std::vector<zmq::message_t> frames;
  std::unique_ptr<wire::AlignedFrame> aligned;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  proto::Reply::Reader reply() const { return reader->getRoot<proto::Reply>(); }
};

// Runs `parse`, turning a Cap'n Proto decoding exception into a Status.
template <typename Fn>
auto Guarded(Fn&& parse) -> decltype(parse()) {
  try {
    return parse();
  } catch (const kj::Exception& e) {
    return Error(ErrorCode::kMalformedMessage, "kvcommd sent a reply that does not decode: {}",
                 e.getDescription().cStr());
  }
}

using Filler = std::function<std::vector<zmq::message_t>(proto::Request::Builder)>;

// Sends one request and returns the reply, or the daemon's error as a Status. A daemon that no
// longer knows this session (it restarted) answers kFailedPrecondition: say Hello, retry once.
Result<Response> Roundtrip(Transport& transport, const Filler& fill,
                           std::chrono::milliseconds timeout,
                           const std::function<Status()>& rehello);
Status Unexpected(std::string_view call);

}  // namespace kvcomm::client::internal

// In a Client member: sends the request `fill` builds; `response` is the reply.
#define KVCOMM_CALL(response, fill) \
  KVCOMM_ASSIGN_OR_RETURN(          \
      internal::Response response,  \
      internal::Roundtrip(*transport_, fill, options_.timeout, [this] { return Hello(); }))
