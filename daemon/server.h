// Server: kvcommd's socket side (the ZeroMQ guide's extended request-reply pattern).
//
//   clients (DEALER) -> frontend ROUTER (endpoint) -> proxy thread -> backend DEALER (inproc)
//                    -> N worker threads (DEALER) -> RequestHandler
//
// The proxy thread only moves frames; workers do the work. Stop() stops reading new requests,
// lets workers finish what they hold, forwards their replies, then flushes the store.
//
// Threads: Start() and Stop() from one owning thread; the sockets belong to the proxy and
// worker threads after Start().
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "daemon/anchor_service.h"
#include "daemon/config.h"
#include "daemon/counters.h"
#include "daemon/request_handler.h"
#include "daemon/sessions.h"
#include "kvstore/store.h"

namespace kvcomm::daemon {

class Server {
 public:
  // Opens the store, binds the endpoint and starts the threads; errors name what failed.
  static Result<std::unique_ptr<Server>> Start(const DaemonConfig& config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Idempotent. Returns the store flush status.
  Status Stop();

  const std::string& endpoint() const { return config_.server.endpoint; }
  kvstore::TieredStore& store() { return *store_; }
  const AnchorService& anchors() const { return *anchors_; }
  const DaemonCounters& counters() const { return counters_; }

 private:
  explicit Server(const DaemonConfig& config);
  void ProxyLoop();
  void WorkerLoop();

  DaemonConfig config_;
  std::unique_ptr<kvstore::TieredStore> store_;
  DaemonCounters counters_;
  std::unique_ptr<SessionTable> sessions_;
  std::unique_ptr<DeviceLeases> leases_;  // with ipc.arena
  std::unique_ptr<AnchorService> anchors_;
  std::unique_ptr<RequestHandler> handler_;
  zmq::context_t context_;
  zmq::socket_t frontend_;
  zmq::socket_t backend_;
  std::thread proxy_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> workers_running_{0};
  bool stopped_ = false;
};

}  // namespace kvcomm::daemon
