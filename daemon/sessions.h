// SessionTable: what each connected client said in Hello, keyed by its ZeroMQ routing id.
// Bounded: beyond max_sessions the least recently active session is forgotten (that client
// gets a FailedPrecondition "send Hello first" and its library says Hello again).
// Thread-safe (one mutex).
#pragma once

#include <mutex>
#include <optional>
#include <string>

#include "common/keys.h"
#include "common/lru_index.h"

namespace kvcomm::daemon {

struct Session {
  std::string client_name;
  std::string name_space;
  std::optional<ModelFingerprint> model;  // none: read-only session
};

class SessionTable {
 public:
  explicit SessionTable(size_t max_sessions) : max_sessions_(max_sessions) {}

  void Upsert(std::string_view routing_id, Session session);
  std::optional<Session> Find(std::string_view routing_id);
  size_t size() const;

 private:
  static Hash128 KeyOf(std::string_view routing_id);

  size_t max_sessions_;
  mutable std::mutex mu_;
  LruIndex<Session> sessions_;
};

}  // namespace kvcomm::daemon
