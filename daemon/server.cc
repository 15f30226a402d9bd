#include "daemon/server.h"

#include <spdlog/spdlog.h>

#include <zmq_addon.hpp>

#include "common/endpoint.h"

namespace kvcomm::daemon {
namespace {

constexpr const char* kBackendAddress = "inproc://kvcommd-workers";
constexpr std::chrono::milliseconds kPollInterval{50};

// Moves every message waiting on `from` to `to` without blocking.
void ForwardPending(zmq::socket_t& from, zmq::socket_t& to) {
  std::vector<zmq::message_t> frames;
  while (zmq::recv_multipart(from, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
    zmq::send_multipart(to, frames);
    frames.clear();
  }
}

}  // namespace

Server::Server(const DaemonConfig& config) : config_(config), context_(1) {}

Result<std::unique_ptr<Server>> Server::Start(const DaemonConfig& config) {
  KVCOMM_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<Server> server(new Server(config));
  KVCOMM_ASSIGN_OR_RETURN(server->store_, kvstore::TieredStore::Open(config.store));
  server->sessions_ = std::make_unique<SessionTable>(config.server.max_sessions);
  if (config.ipc.arena_bytes > 0) {
    auto leases = DeviceLeases::Create(config.ipc);
    if (!leases.ok()) return leases.status().WithContext("ipc.arena");
    server->leases_ = std::move(leases).value();
  }
  server->anchors_ =
      std::make_unique<AnchorService>(*server->store_, config.anchors, server->leases_.get(),
                                      config.checks);
  KVCOMM_ASSIGN_OR_RETURN(auto restored, server->anchors_->Restore());
  if (restored.slots > 0 || restored.bad_records > 0) {
    spdlog::info(
        "anchor pools restored slots={} anchors={} dropped_anchors={} dropped_deltas={} "
        "bad_records={}",
        restored.slots, restored.anchors, restored.dropped_anchors, restored.dropped_deltas,
        restored.bad_records);
  }
  server->handler_ =
      std::make_unique<RequestHandler>(*server->store_, *server->anchors_, *server->sessions_,
                                       server->counters_, server->config_.server);
  KVCOMM_RETURN_IF_ERROR(PrepareEndpoint(config.server.endpoint));
  try {
    server->frontend_ = zmq::socket_t(server->context_, zmq::socket_type::router);
    // Frames far beyond the request limit are cut off by ZeroMQ (the peer is disconnected);
    // anything up to twice the limit still gets a typed "too large" reply.
    server->frontend_.set(zmq::sockopt::maxmsgsize,
                          static_cast<int64_t>(config.server.max_request_bytes * 2 + (1 << 20)));
    server->frontend_.set(zmq::sockopt::linger, 2000);
    server->frontend_.bind(config.server.endpoint);
    server->backend_ = zmq::socket_t(server->context_, zmq::socket_type::dealer);
    server->backend_.bind(kBackendAddress);
  } catch (const zmq::error_t& e) {
    return Error(ErrorCode::kUnavailable, "cannot bind {}: {}", config.server.endpoint, e.what());
  }
  for (uint32_t i = 0; i < config.server.workers; ++i) {
    server->workers_running_.fetch_add(1);
    server->workers_.emplace_back([s = server.get()] { s->WorkerLoop(); });
  }
  server->proxy_ = std::thread([s = server.get()] { s->ProxyLoop(); });
  spdlog::info("kvcommd listening endpoint={} workers={} tiers={} persist={} data_dir={}",
               config.server.endpoint, config.server.workers, server->store_->TierKinds().size(),
               config.store.persist, config.store.data_dir);
  return server;
}

void Server::WorkerLoop() {
  zmq::socket_t socket(context_, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 1000);
  socket.connect(kBackendAddress);
  std::vector<zmq::message_t> frames;
  while (true) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, kPollInterval);
    if (!(item.revents & ZMQ_POLLIN)) {
      if (stopping_.load()) break;  // nothing in flight for this worker
      continue;
    }
    frames.clear();
    if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
      continue;
    if (frames.empty()) continue;
    zmq::message_t routing_id = std::move(frames.front());
    frames.erase(frames.begin());
    std::vector<zmq::message_t> reply =
        handler_->Handle(routing_id.to_string_view(), std::move(frames));
    reply.insert(reply.begin(), std::move(routing_id));
    zmq::send_multipart(socket, reply);
  }
  workers_running_.fetch_sub(1);
}

void Server::ProxyLoop() {
  std::vector<zmq::message_t> frames;
  while (true) {
    const bool stopping = stopping_.load();
    if (stopping && workers_running_.load() == 0) {
      ForwardPending(backend_, frontend_);  // the last replies
      break;
    }
    zmq::pollitem_t items[] = {{backend_.handle(), 0, ZMQ_POLLIN, 0},
                               {frontend_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, stopping ? 1 : 2, kPollInterval);  // once stopping, take no new requests
    if (items[0].revents & ZMQ_POLLIN) ForwardPending(backend_, frontend_);
    if (!stopping && (items[1].revents & ZMQ_POLLIN)) ForwardPending(frontend_, backend_);
  }
}

Status Server::Stop() {
  if (stopped_) return Status::Ok();
  stopped_ = true;
  spdlog::info("kvcommd stopping: finishing in-flight requests");
  stopping_.store(true);
  for (auto& w : workers_) w.join();
  if (proxy_.joinable()) proxy_.join();
  frontend_.close();
  backend_.close();
  anchors_->SaveCredits();
  Status flushed = store_->Flush();
  if (flushed.ok()) {
    spdlog::info("kvcommd stopped: store flushed, {} requests served", counters_.requests());
  } else {
    spdlog::error("kvcommd stopped but the store flush failed: {}", flushed.ToString());
  }
  return flushed;
}

Server::~Server() { (void)Stop(); }

}  // namespace kvcomm::daemon
