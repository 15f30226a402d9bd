#include "daemon/sessions.h"

namespace kvcomm::daemon {

Hash128 SessionTable::KeyOf(std::string_view routing_id) {
  Hasher128 h;
  h.AddString(routing_id);
  return h.Finish();
}

void SessionTable::Upsert(std::string_view routing_id, Session session) {
  std::lock_guard lock(mu_);
  Hash128 key = KeyOf(routing_id);
  sessions_.Remove(key);
  sessions_.Insert(key, std::move(session));
  while (sessions_.size() > max_sessions_) sessions_.Remove(*sessions_.Coldest());
}

std::optional<Session> SessionTable::Find(std::string_view routing_id) {
  std::lock_guard lock(mu_);
  Session* session = sessions_.Touch(KeyOf(routing_id));
  if (session == nullptr) return std::nullopt;
  return *session;
}

size_t SessionTable::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

}  // namespace kvcomm::daemon
