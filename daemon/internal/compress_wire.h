// GetCompressed: a stored segment compressed by kvstore/compress to the method and budget an
// agent asks for (daemon-only; the protocol is described in schemas/kvcomm.capnp).
#pragma once

#include <vector>
#include <zmq.hpp>

#include "kvstore/store.h"
#include "schemas/kvcomm.capnp.h"

namespace kvcomm::daemon::internal {

// Validates the request and its queries frame (frames[1], if any), compresses the segment and
// fills `out`, appending the encoded segment as a payload frame.
Status ServeCompressed(kvstore::TieredStore& store, const kvstore::Scope& scope,
                       proto::GetCompressed::Reader request,
                       const std::vector<zmq::message_t>& frames,
                       proto::CompressedResult::Builder out,
                       std::vector<zmq::message_t>& payload_out);

}  // namespace kvcomm::daemon::internal
