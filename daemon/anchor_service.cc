// AnchorService: anchors made from offers and reports, answer-level checks, and the pools'
// persistence. Plans are in anchor_plan.cc.
#include "daemon/anchor_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "daemon/anchor_records.h"
#include "daemon/internal/anchor_keys.h"

namespace kvcomm::daemon {

using internal::DeltaKey;
using internal::FollowingBaseKey;
using internal::FollowingDeltaKey;
using internal::SecondsSince;

AnchorService::AnchorService(kvstore::TieredStore& store, AnchorPoolConfig config,
                             DeviceLeases* leases, ReuseCheckConfig checks)
    : store_(store),
      config_(config),
      device_leases_(leases),
      host_math_(store),
      device_math_(leases ? std::make_unique<DeviceMath>(store, *leases) : nullptr),
      prefer_device_math_(
          leases ? std::make_unique<PreferDeviceMath>(host_math_, *device_math_, *leases)
                 : nullptr),
      checks_(checks) {}

AnchorService::~AnchorService() { SaveCredits(); }

void AnchorService::SaveCredits() {
  std::lock_guard lock(slots_mutex_);
  for (auto& [key, state] : slots_) {
    std::lock_guard slot_lock(state->mutex);
    if (!state->credits_unsaved) continue;
    const auto& [name_space, model, slot] = key;
    Persist({name_space, model}, slot, *state);
  }
}

AnchorService::SlotState& AnchorService::Slot(const kvstore::Scope& scope,
                                              const std::string& slot) {
  std::lock_guard lock(slots_mutex_);
  auto& state = slots_[{scope.name_space, *scope.model, slot}];
  if (!state) state = std::make_unique<SlotState>(config_);
  return *state;
}

bool AnchorService::OnDevice(const KvLayout& geometry) const {
  return device_math_ && geometry.dtype == DType::kBF16 && geometry.head_dim % 16 == 0;
}

ReuseMath& AnchorService::HostBoundMath(const KvLayout& geometry) {
  if (OnDevice(geometry)) return *prefer_device_math_;
  return host_math_;
}

Status AnchorService::PutReported(const kvstore::Scope& scope, const SegmentKey& key,
                                  const KvLayout& layout, const Blob& kv, int32_t first_position) {
  if (kv.size() != layout.PayloadBytes())
    return InvalidArgument("reported KV is {} bytes, layout {} needs {}", kv.size(),
                           layout.ToString(), layout.PayloadBytes());
  kvstore::SegmentMeta meta = DerivedMeta(scope, key, layout, first_position);
  meta.checksum = Checksum64(kv.span());
  return store_.Put(std::move(meta), kv).status();
}

void AnchorService::ReleaseAnchor(const kvstore::Scope& scope, const AnchorSlot::Anchor& anchor) {
  // Its deltas are only reachable through the pool; the base is an ordinary segment and stays.
  for (const auto& [agent, deltas] : anchor.deltas) {
    (void)store_.Delete(deltas.placeholder, scope);
    if (!deltas.following.IsZero()) (void)store_.Delete(deltas.following, scope);
  }
}

Result<AnchorService::Candidates> AnchorService::DecideOnCandidates(
    const kvstore::Scope& scope, ReuseMath& math, const KvLayout& geometry, const AnchorSlot& pool,
    const SegmentKey& base_key, const MathKv& base, const std::string& slot,
    const std::string& agent) {
  const auto& anchors = pool.anchors();
  Candidates out;
  DecisionMemo::Bases compared{base_key};
  for (size_t i : pool.CandidatesFor(base.layout.tokens)) {
    if (!anchors[i].deltas.contains(agent)) continue;
    KVCOMM_ASSIGN_OR_RETURN(auto b, math.Load(scope, anchors[i].base, geometry));
    if (!b) continue;  // its base left the store: it cannot be used
    out.bases.push_back(std::move(*b));
    out.indices.push_back(i);
    compared.push_back(anchors[i].base);
  }
  if (auto known = decisions_.Find(compared)) {
    out.decision = std::move(*known);
  } else {
    KVCOMM_ASSIGN_OR_RETURN(out.decision, math.Decide(base, out.bases, config_));
    decisions_.Insert(compared, out.decision);
  }
  spdlog::debug(
      "slot '{}' agent '{}': {} candidates, entropy {:.3f} (limit {:.3f}), "
      "closest relative distance {:.3f}: {}",
      slot, agent, out.bases.size(), out.decision.entropy, out.decision.limit,
      out.decision.relative_distance, out.decision.prefill ? "a new anchor" : "reuse");
  return out;
}

Result<bool> AnchorService::AdmitOffered(const kvstore::Scope& scope, ReuseMath& math,
                                         const std::string& agent, const std::string& slot,
                                         const KvLayout& geometry, const SegmentKey& base_key,
                                         const MathKv& base) {
  // A slot not estimated for the agent makes no anchors either (as in Plan).
  if (!checks_.Estimates({scope.name_space, *scope.model, slot, agent})) return false;
  SlotState& state = Slot(scope, slot);
  std::lock_guard lock(state.mutex);
  for (const auto& anchor : state.pool.anchors())
    if (anchor.base == base_key) return true;
  KVCOMM_ASSIGN_OR_RETURN(
      Candidates candidates,
      DecideOnCandidates(scope, math, geometry, state.pool, base_key, base, slot, agent));
  if (!candidates.decision.prefill) return false;  // anchors close enough estimate it
  ReuseCounter counter{scope.name_space, agent, slot};
  AddAnchor(scope, slot, state, base_key, base.layout.tokens, counter);
  stats_.Add(counter);
  return true;
}

Result<AnchorService::PlaceholderBase> AnchorService::LoadPlaceholderBase(
    const kvstore::Scope& scope, ReuseMath& math, const ReuseModel& model,
    const std::vector<int32_t>& tokens) {
  const SegmentKey key =
      ComputeContextKey(*scope.model, scope.name_space, TokenPrefixHash(model.base_prefix), tokens);
  KVCOMM_ASSIGN_OR_RETURN(auto base, math.Load(scope, key, model.geometry));
  if (!base) {
    return Status(ErrorCode::kNotFound,
                  "no base segment for the placeholder (store it before reporting or offering)");
  }
  if (base->layout.tokens != tokens.size())
    return Error(ErrorCode::kDataLoss, "base segment {} has {} tokens, the placeholder {}",
                 key.ToHex(), base->layout.tokens, tokens.size());
  return PlaceholderBase{key, std::move(*base)};
}

Result<bool> AnchorService::OfferAnchor(const kvstore::Scope& scope, const OfferInput& input) {
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  ReuseMath& math = HostBoundMath(input.model.geometry);
  KVCOMM_ASSIGN_OR_RETURN(const PlaceholderBase base,
                          LoadPlaceholderBase(scope, math, input.model, input.placeholder_tokens));
  KVCOMM_ASSIGN_OR_RETURN(const bool wanted, AdmitOffered(scope, math, input.agent, input.slot,
                                                          input.model.geometry, base.key, base.kv));
  spdlog::debug("offer of slot '{}' agent '{}', {} tokens: {}", input.slot, input.agent,
                input.placeholder_tokens.size(), wanted ? "wanted" : "not an anchor");
  return wanted;
}

void AnchorService::AddAnchor(const kvstore::Scope& scope, const std::string& slot,
                              SlotState& state, const SegmentKey& base_key, uint32_t tokens,
                              ReuseCounter& counter) {
  auto evicted = state.pool.Add({base_key, tokens, 0, {}});
  ++counter.anchors_created;
  if (evicted) {
    ++counter.anchors_evicted;
    ReleaseAnchor(scope, *evicted);
  }
  Persist(scope, slot, state);
}

Status AnchorService::ReportActual(const kvstore::Scope& scope, const ActualInput& input) {
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  const auto start = std::chrono::steady_clock::now();
  const auto& model = input.model;
  // On the GPU when kvcommd has one for the model's KV: the deviations are then computed where
  // the bases lie (a host round trip per report costs far more than the arithmetic).
  ReuseMath& math = HostBoundMath(model.geometry);
  KVCOMM_ASSIGN_OR_RETURN(const PlaceholderBase loaded,
                          LoadPlaceholderBase(scope, math, model, input.placeholder_tokens));
  const SegmentKey& base_key = loaded.key;
  const MathKv& base = loaded.kv;
  const KvLayout p_layout =
      WithTokens(model.geometry, input.placeholder_tokens.size(), model.geometry.dtype);
  if (input.offered) {
    KVCOMM_ASSIGN_OR_RETURN(const bool wanted, AdmitOffered(scope, math, input.agent, input.slot,
                                                            model.geometry, base_key, base));
    if (!wanted) {
      spdlog::debug("offered report of slot '{}' agent '{}': not an anchor, dropped", input.slot,
                    input.agent);
      return Status::Ok();
    }
  }
  AnchorSlot::AgentDeltas deltas;
  deltas.placeholder = DeltaKey(scope, input.slot, base_key, input.agent);
  const int32_t base_position = static_cast<int32_t>(model.base_prefix.size());
  KVCOMM_RETURN_IF_ERROR(
      math.PutDeviation({scope, deltas.placeholder, p_layout, input.placeholder_kv.span(),
                         input.placeholder_position, base, base_position, model.inv_freq}));
  if (!input.following_tokens.empty()) {
    const KvLayout t_layout =
        WithTokens(model.geometry, input.following_tokens.size(), model.geometry.dtype);
    const SegmentKey t_base_key =
        FollowingBaseKey(scope, input.slot, input.agent, input.following_tokens);
    KVCOMM_ASSIGN_OR_RETURN(auto t_base, math.Load(scope, t_base_key, model.geometry));
    if (!t_base) {
      // The agent's first report of this segment becomes its base (its own delta is zero).
      KVCOMM_RETURN_IF_ERROR(
          PutReported(scope, t_base_key, t_layout, input.following_kv, input.following_position));
      KVCOMM_ASSIGN_OR_RETURN(t_base, math.Load(scope, t_base_key, model.geometry));
      if (!t_base)
        return Error(ErrorCode::kResourceExhausted,
                     "the store dropped a template segment's base as soon as it was put");
    }
    deltas.following =
        FollowingDeltaKey(scope, input.slot, base_key, input.agent, input.following_tokens);
    KVCOMM_RETURN_IF_ERROR(math.PutDeviation({scope, deltas.following, t_layout,
                                              input.following_kv.span(), input.following_position,
                                              *t_base, t_base->first_position, model.inv_freq}));
  }
  SlotState& slot = Slot(scope, input.slot);
  bool recorded = false;
  {
    std::lock_guard lock(slot.mutex);
    recorded = slot.pool.SetDeltas(base_key, input.agent, deltas);
    if (recorded) Persist(scope, input.slot, slot);
  }
  ReuseCounter counter{scope.name_space, input.agent, input.slot};
  counter.bytes_moved = input.placeholder_kv.size() + input.following_kv.size();
  stats_.Add(counter);
  spdlog::debug("report of slot '{}' agent '{}': {} + {} tokens, {:.1f} ms", input.slot,
                input.agent, input.placeholder_tokens.size(), input.following_tokens.size(),
                SecondsSince(start) * 1e3);
  if (!recorded) {
    // The anchor was evicted while the agent prefilled: its deltas have no use.
    (void)store_.Delete(deltas.placeholder, scope);
    if (!deltas.following.IsZero()) (void)store_.Delete(deltas.following, scope);
    return Error(ErrorCode::kNotFound, "the placeholder is no longer an anchor of slot '{}'",
                 input.slot);
  }
  return Status::Ok();
}

Status AnchorService::ReportCheck(const kvstore::Scope& scope, const CheckInput& input) {
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  KVCOMM_RETURN_IF_ERROR(checks_.Record(scope.name_space, *scope.model, input.slots,
                                        input.blamed_slots, input.agent, input.reply_changed,
                                        input.next_token_kl));
  const auto charged = ChargedSlots(input.slots, input.blamed_slots, input.reply_changed);
  for (const std::string& slot : input.slots) {
    ReuseCounter counter{scope.name_space, input.agent, slot};
    counter.checks = 1;
    counter.checks_changed = std::ranges::find(charged, slot) != charged.end();
    stats_.Add(counter);
  }
  if (input.reply_changed)
    spdlog::debug(
        "check of agent '{}': the reply changed ({} slots, {} blamed, {} charged, KL "
        "{:.4f})",
        input.agent, input.slots.size(), input.blamed_slots.size(), charged.size(),
        input.next_token_kl);
  return Status::Ok();
}

bool AnchorService::IsStored(const kvstore::Scope& scope, const SegmentKey& key) const {
  return store_.Lookup({{key, kvstore::KeyKind::kContext}}, scope).front().found;
}

void AnchorService::Persist(const kvstore::Scope& scope, const std::string& slot,
                            SlotState& state) {
  state.credits_unsaved = false;
  const AnchorSlot& pool = state.pool;
  const std::string name = SlotRecordName(scope.name_space, *scope.model, slot);
  Status persisted =
      pool.anchors().empty()
          ? store_.DeleteRecord(name)
          : store_.PutRecord(
                name, EncodeSlotRecord({scope.name_space, *scope.model, slot, pool.anchors()}));
  if (!persisted.ok())
    spdlog::error("anchor pool of slot '{}' not persisted: {}", slot, persisted.ToString());
}

Result<AnchorService::RestoreSummary> AnchorService::Restore() {
  RestoreSummary summary;
  KVCOMM_ASSIGN_OR_RETURN(auto records, store_.Records(kSlotRecordPrefix, &summary.bad_records));
  for (const auto& [name, bytes] : records) {
    auto record = DecodeSlotRecord(bytes);
    if (!record.ok() || SlotRecordName(record->name_space, record->model, record->slot) != name) {
      spdlog::warn("anchor pool record dropped: {}", record.ok()
                                                         ? "its name does not match its content"
                                                         : record.status().ToString());
      (void)store_.DeleteRecord(name);
      ++summary.bad_records;
      continue;
    }
    const kvstore::Scope scope{record->name_space, record->model};
    SlotState& state = Slot(scope, record->slot);
    std::lock_guard lock(state.mutex);
    bool changed = false;
    for (auto& anchor : record->anchors) {
      for (auto it = anchor.deltas.begin(); it != anchor.deltas.end();) {
        const auto& d = it->second;
        if (IsStored(scope, d.placeholder) &&
            (d.following.IsZero() || IsStored(scope, d.following))) {
          ++it;
          continue;
        }
        (void)store_.Delete(d.placeholder, scope);  // the half that is left, if any
        if (!d.following.IsZero()) (void)store_.Delete(d.following, scope);
        it = anchor.deltas.erase(it);
        ++summary.dropped_deltas;
        changed = true;
      }
      if (!IsStored(scope, anchor.base)) {
        ReleaseAnchor(scope, anchor);
        ++summary.dropped_anchors;
        changed = true;
        continue;
      }
      if (auto evicted = state.pool.Add(std::move(anchor))) {  // the capacity may be lower now
        ReleaseAnchor(scope, *evicted);
        changed = true;
      }
    }
    summary.anchors += state.pool.anchors().size();
    ++summary.slots;
    if (changed) Persist(scope, record->slot, state);
  }
  return summary;
}

std::vector<SlotListing> AnchorService::List(const kvstore::Scope& scope) const {
  std::vector<SlotListing> out;
  std::lock_guard lock(slots_mutex_);
  for (const auto& [key, state] : slots_) {
    const auto& [name_space, model, slot] = key;
    if (name_space != scope.name_space || (scope.model && *scope.model != model)) continue;
    std::lock_guard slot_lock(state->mutex);
    out.push_back({slot, state->pool.anchors()});
  }
  return out;
}

}  // namespace kvcomm::daemon
