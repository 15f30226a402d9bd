// RequestHandler: turns one request (Cap'n Proto frame + payload frames) into one reply
// (Cap'n Proto frame + payload frames). Every request is validated completely before it
// touches the store; anything wrong becomes a typed Error reply. Never throws.
//
// Thread-safe: holds no mutable state of its own; the store, session table and counters are
// thread-safe. One handler is shared by all worker threads.
#pragma once

#include <mutex>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "daemon/anchor_service.h"
#include "daemon/config.h"
#include "daemon/counters.h"
#include "daemon/sessions.h"
#include "kernels/device.h"
#include "kvstore/store.h"

namespace kvcomm::daemon {

// Where puts from leases are copied once (pinned: at full bus speed) for their checksum, one at
// a time. Kept for the daemon's life: allocating pinned memory costs more than the copy.
struct LeaseStaging {
  std::mutex mutex;
  kernels::PinnedHostBuffer buffer;
};

class RequestHandler {
 public:
  RequestHandler(kvstore::TieredStore& store, AnchorService& anchors, SessionTable& sessions,
                 DaemonCounters& counters, const ServerConfig& config)
      : store_(store),
        anchors_(anchors),
        sessions_(sessions),
        counters_(counters),
        config_(config) {}

  // `frames` excludes the routing id. The reply's first frame is the Cap'n Proto Reply.
  std::vector<zmq::message_t> Handle(std::string_view routing_id,
                                     std::vector<zmq::message_t> frames);

 private:
  kvstore::TieredStore& store_;
  AnchorService& anchors_;
  SessionTable& sessions_;
  DaemonCounters& counters_;
  const ServerConfig& config_;
  LeaseStaging staging_;
};

}  // namespace kvcomm::daemon
