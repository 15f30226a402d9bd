// KVCOMM's reuse decision for new content depends only on the stored bases it compares: the
// content's base and the candidate anchors' bases (../shared/KVCOMM.md, "Reuse decision").
// In a round of fully connected agents every agent plans the same new replies against the same
// anchors, so kvcommd remembers the decisions (their per-token distance sums included, which
// the blend reuses) by the bases' keys instead of comparing the same KV once per agent. Bases
// are keyed by their tokens and context, so a key's KV does not change.
//
// Bounded, least recently used first out. Thread-safe.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "common/keys.h"
#include "daemon/anchor_pool.h"

namespace kvcomm::daemon {

class DecisionMemo {
 public:
  // The content's base key first, then the candidates' base keys in the order decided on.
  using Bases = std::vector<SegmentKey>;

  explicit DecisionMemo(size_t capacity) : capacity_(capacity) {}

  std::optional<ReuseDecision> Find(const Bases& bases);
  void Insert(const Bases& bases, ReuseDecision decision);
  size_t size() const;

 private:
  using Entries = std::list<std::pair<Bases, ReuseDecision>>;  // most recently used first

  const size_t capacity_;
  mutable std::mutex mutex_;
  Entries entries_;
  std::map<Bases, Entries::iterator> index_;
};

}  // namespace kvcomm::daemon
