// The KVCOMM anchor service of kvcommd (../shared/KVCOMM.md): plans an agent's prompt segment
// by segment (EXACT / REALIGNED / PREFILL), assembles realigned KV from a placeholder's base and
// the anchors of its slot, and records the deltas agents report after a prefill.
//
// Storage: bases are ordinary segments (a placeholder's KV right after the model's base prefix,
// stored by agents under its context key); deltas and the agents' template-segment bases are
// segments the service writes under derived keys, so they tier and persist like any segment.
// The pools themselves (which anchors, activations) are kept in memory, per namespace, model
// and slot.
//
// Thread-safe: each slot has its own lock; KV arithmetic runs outside the locks.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "daemon/anchor_kv.h"
#include "daemon/anchor_pool.h"
#include "daemon/decision_memo.h"
#include "daemon/prefer_device_math.h"
#include "daemon/reuse_checks.h"
#include "daemon/reuse_math.h"
#include "daemon/reuse_stats.h"
#include "kvstore/store.h"

namespace kvcomm::daemon {

inline constexpr size_t kMaxPlanSegments = 4096;

struct ReuseModel {
  KvLayout geometry;  // layers, kv heads, head dim; dtype: what KV is sent back as
  std::vector<float> inv_freq;
  std::vector<int32_t> base_prefix;  // the tokens bases are computed after
  Status Validate() const;
};

struct PlanSegmentInput {
  bool placeholder = false;
  std::string slot;  // placeholders only
  std::vector<int32_t> tokens;
};

struct PlanInput {
  std::string agent;
  ReuseModel model;
  std::vector<PlanSegmentInput> segments;  // the whole prompt, from position 0
  Status Validate() const;
};

enum class Decision { kExact, kRealigned, kPrefill };

// Where a plan's KV goes: bytes in the reply, or leases of the IPC arena on the daemon's GPU.
enum class Delivery { kHost, kDevice };

struct SegmentPlanOutput {
  Decision decision = Decision::kPrefill;
  bool report_actual = false;
  PlannedKv kv;  // exact and realigned
};

struct PromptPlanOutput {
  std::vector<SegmentPlanOutput> segments;  // one per input segment
  // The agent is asked to compute this turn in full as well and send ReportCheck
  // (reuse_checks.h).
  bool check_reuse = false;
};

struct ActualInput {
  std::string agent, slot;
  ReuseModel model;
  std::vector<int32_t> placeholder_tokens;
  int32_t placeholder_position = 0;
  Blob placeholder_kv;  // layout: model.geometry with placeholder_tokens.size() tokens
  std::vector<int32_t> following_tokens;  // empty: none
  int32_t following_position = 0;
  Blob following_kv;
  // Sent unasked: kept only if the content is an anchor of the slot or, by the pool's rule,
  // becomes one (and the slot is estimated for the agent); otherwise dropped, successfully.
  bool offered = false;
  Status Validate() const;
};

// New content an agent computed in its prompt before kvcommd held its base (OfferAnchor in
// schemas/kvcomm.capnp): whether kvcommd wants its KV, asked before the KV is sent.
struct OfferInput {
  std::string agent, slot;
  ReuseModel model;
  std::vector<int32_t> placeholder_tokens;
  Status Validate() const;
};

// The outcome of a check kvcommd asked for: the slots the turn used estimated KV for, whether
// its reply differed from the full prefill's, and the first reply token's KL(full || reuse).
struct CheckInput {
  std::string agent;
  std::vector<std::string> slots;
  bool reply_changed = false;
  double next_token_kl = 0;
  std::vector<std::string> blamed_slots;  // of `slots`: those that changed the reply alone
  Status Validate() const;
};

struct SlotListing {
  std::string slot;
  std::vector<AnchorSlot::Anchor> anchors;
};

class AnchorService {
 public:
  // `leases`: the IPC arena for device delivery, or nullptr (then only host delivery).
  AnchorService(kvstore::TieredStore& store, AnchorPoolConfig config,
                DeviceLeases* leases = nullptr, ReuseCheckConfig checks = {});
  ~AnchorService();  // saves the credits

  struct RestoreSummary {
    uint64_t slots = 0, anchors = 0;
    uint64_t dropped_anchors = 0;  // their base left the store
    uint64_t dropped_deltas = 0;   // an agent's deltas of which a segment left the store
    uint64_t bad_records = 0;      // unreadable records (deleted)
  };
  // Reads back the pools an earlier run persisted (store records), keeping anchors whose base
  // is still stored and deltas whose segments are. Call once, before serving.
  Result<RestoreSummary> Restore();

  // `scope.model` must be set. One answer per input segment. With device delivery, every
  // exact or realigned segment's KV is in a lease the caller hands on (or releases).
  // Placeholders are prefilled where checks found estimates to change this agent's replies
  // (reuse_checks.h).
  Result<PromptPlanOutput> Plan(const kvstore::Scope& scope, const PlanInput& input,
                                Delivery delivery = Delivery::kHost);
  Status ReportActual(const kvstore::Scope& scope, const ActualInput& input);
  // Whether an offered report of the content is wanted: the content is an anchor of the slot,
  // or by the pool's rule is made one now (the report then brings its deltas). Its base must
  // be stored.
  Result<bool> OfferAnchor(const kvstore::Scope& scope, const OfferInput& input);
  Status ReportCheck(const kvstore::Scope& scope, const CheckInput& input);
  std::vector<SlotListing> List(const kvstore::Scope& scope) const;
  // Writes the pools whose activation counts changed since they were last persisted. Credits
  // alone do not write the record at once (that would put a store write in every plan); they
  // are saved with the pool's next change, here, and on destruction, so a crash loses only
  // activation counts.
  void SaveCredits();
  std::vector<ReuseCounter> Stats() const { return stats_.Snapshot(); }
  // The lease arena of device delivery, or nullptr.
  DeviceLeases* leases() const { return device_leases_; }

 private:
  struct SlotState {
    explicit SlotState(const AnchorPoolConfig& config) : pool(config) {}
    std::mutex mutex;
    AnchorSlot pool;
    bool credits_unsaved = false;  // activations changed since the record was written
  };
  // The anchors a realigned placeholder was blended from, kept for the template segment after it.
  struct Blend {
    std::string slot;
    MathKv base;
    std::vector<AnchorSlot::Anchor> anchors;
    std::vector<MathKv> anchor_bases;
    std::vector<float> token_sums;  // the reuse decision's distances, if it saw these anchors
  };
  class PlanContext;
  // The anchors new content could be estimated from (at least as long, with the agent's deltas,
  // base still stored) and KVCOMM's decision on them (prefill: the content is a new anchor).
  struct Candidates {
    std::vector<MathKv> bases;
    std::vector<size_t> indices;  // into the pool's anchors, one per base
    ReuseDecision decision;
  };
  // With the slot's lock held.
  Result<Candidates> DecideOnCandidates(const kvstore::Scope& scope, ReuseMath& math,
                                        const KvLayout& geometry, const AnchorSlot& pool,
                                        const SegmentKey& base_key, const MathKv& base,
                                        const std::string& slot, const std::string& agent);
  // Whether an offered report is wanted: its content is an anchor, or is made one now.
  Result<bool> AdmitOffered(const kvstore::Scope& scope, ReuseMath& math, const std::string& agent,
                            const std::string& slot, const KvLayout& geometry,
                            const SegmentKey& base_key, const MathKv& base);
  // The stored base of a placeholder's content (kNotFound when there is none).
  struct PlaceholderBase {
    SegmentKey key;
    MathKv kv;
  };
  Result<PlaceholderBase> LoadPlaceholderBase(const kvstore::Scope& scope, ReuseMath& math,
                                              const ReuseModel& model,
                                              const std::vector<int32_t>& tokens);
  // Makes the content an anchor of the slot (evicting one past capacity); slot's lock held.
  void AddAnchor(const kvstore::Scope& scope, const std::string& slot, SlotState& state,
                 const SegmentKey& base_key, uint32_t tokens, ReuseCounter& counter);

  SlotState& Slot(const kvstore::Scope& scope, const std::string& slot);
  // Decides a placeholder; fills `blend` when it is realigned.
  Result<SegmentPlanOutput> PlanPlaceholder(PlanContext& context, const PlanSegmentInput& segment,
                                            int32_t position, std::optional<Blend>& blend);
  Result<SegmentPlanOutput> PlanFollowing(PlanContext& context, const PlanSegmentInput& segment,
                                          int32_t position, const Blend& blend);
  // Whether the KV arithmetic for this model can run on kvcommd's GPU (DeviceMath).
  bool OnDevice(const KvLayout& geometry) const;
  // Where host-bound answers for this model are computed.
  ReuseMath& HostBoundMath(const KvLayout& geometry);
  // Stores KV an agent reported, as it came, as a derived segment.
  Status PutReported(const kvstore::Scope& scope, const SegmentKey& key, const KvLayout& layout,
                     const Blob& kv, int32_t first_position);
  void ReleaseAnchor(const kvstore::Scope& scope, const AnchorSlot::Anchor& anchor);
  bool IsStored(const kvstore::Scope& scope, const SegmentKey& key) const;
  // Rewrites the slot's record (anchor_records.h); called with the slot's lock held whenever its
  // anchors changed. A failure is logged: serving goes on, only a restart would forget the pool.
  void Persist(const kvstore::Scope& scope, const std::string& slot, SlotState& state);

  kvstore::TieredStore& store_;
  AnchorPoolConfig config_;
  DeviceLeases* device_leases_;
  HostMath host_math_;
  std::unique_ptr<DeviceMath> device_math_;  // with a lease arena
  // Host-bound answers (frames plans, reports) computed on the GPU where they can be.
  std::unique_ptr<PreferDeviceMath> prefer_device_math_;
  ReuseStats stats_;
  ReuseChecks checks_;
  // Decisions on new content by the bases compared (every agent of a round decides the same).
  DecisionMemo decisions_{256};
  mutable std::mutex slots_mutex_;
  // (namespace, model, slot) -> pool
  std::map<std::tuple<std::string, Hash128, std::string>, std::unique_ptr<SlotState>> slots_;
};

}  // namespace kvcomm::daemon
