#include "daemon/anchor_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "daemon/anchor_records.h"
#include "daemon/timed_math.h"
#include "kernels/realign.h"

namespace kvcomm::daemon {
namespace {

Hash128 TokensHash(std::span<const int32_t> tokens) {
  Hasher128 h;
  for (int32_t t : tokens) h.AddU64(static_cast<uint32_t>(t));
  return h.Finish();
}

// Keys of the segments the service writes. They never collide with token-derived keys, so a
// delta is never served as a placeholder's KV.
SegmentKey DerivedKey(const kvstore::Scope& scope, std::string_view kind, std::string_view slot,
                      const Hash128& anchor_base, std::string_view agent,
                      const Hash128& segment_tokens) {
  return Hasher128()
      .AddString("kvcomm.anchor-service")
      .AddString(kind)
      .AddHash(*scope.model)
      .AddString(scope.name_space)
      .AddString(slot)
      .AddHash(anchor_base)
      .AddString(agent)
      .AddHash(segment_tokens)
      .Finish();
}
SegmentKey DeltaKey(const kvstore::Scope& scope, std::string_view slot, const Hash128& base,
                    std::string_view agent) {
  return DerivedKey(scope, "placeholder-delta", slot, base, agent, {});
}
SegmentKey FollowingDeltaKey(const kvstore::Scope& scope, std::string_view slot,
                             const Hash128& base, std::string_view agent,
                             std::span<const int32_t> following) {
  return DerivedKey(scope, "following-delta", slot, base, agent, TokensHash(following));
}
SegmentKey FollowingBaseKey(const kvstore::Scope& scope, std::string_view slot,
                            std::string_view agent, std::span<const int32_t> following) {
  return DerivedKey(scope, "following-base", slot, {}, agent, TokensHash(following));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// Per-plan state: where each segment sits, and the statistics the plan adds.
class AnchorService::PlanContext {
 public:
  PlanContext(const kvstore::Scope& scope, const PlanInput& input, ReuseMath& math)
      : scope(scope), input(input), math(math) {}
  ReuseCounter& Counter(const std::string& slot) {
    auto& c = counters[slot];
    c.name_space = scope.name_space;
    c.agent = input.agent;
    c.slot = slot;
    return c;
  }
  const kvstore::Scope& scope;
  const PlanInput& input;
  ReuseMath& math;
  std::map<std::string, ReuseCounter> counters;  // node-based: references stay valid
};

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

Result<PromptPlanOutput> AnchorService::Plan(const kvstore::Scope& scope, const PlanInput& input,
                                             Delivery delivery) {
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  const auto start = std::chrono::steady_clock::now();
  ReuseMath* math = &HostBoundMath(input.model.geometry);
  if (delivery == Delivery::kDevice) {
    if (!device_math_)
      return Error(ErrorCode::kUnavailable,
                   "kvcommd serves no device delivery: it needs a GPU tier (store.gpu_capacity) "
                   "and a lease arena (ipc.arena)");
    if (!OnDevice(input.model.geometry))
      return InvalidArgument("device delivery needs bf16 KV with head_dim % 16 == 0, got {}",
                             input.model.geometry.ToString());
    math = device_math_.get();
  }
  TimedMath timed(*math);
  PlanContext context(scope, input, timed);
  std::vector<SegmentPlanOutput> out;
  std::vector<int32_t> preceding;
  std::optional<Blend> blend;          // of the placeholder just before, if realigned
  std::vector<std::string> estimated;  // slots of the realigned placeholders
  // Leases of a plan that fails half way are given back, not left to expire.
  auto release_leases = [&] {
    for (const auto& plan : out)
      if (plan.kv.lease) (void)device_leases_->Release(plan.kv.lease->id);
  };
  for (const auto& segment : input.segments) {
    const int32_t position = static_cast<int32_t>(preceding.size());
    const SegmentKey context_key = ComputeContextKey(*scope.model, scope.name_space,
                                                     TokenPrefixHash(preceding), segment.tokens);
    const std::string counter_slot = segment.placeholder ? segment.slot : "";
    ReuseCounter& counter = context.Counter(counter_slot);
    counter.tokens_requested += segment.tokens.size();
    std::optional<Blend> next_blend;
    SegmentPlanOutput plan;
    Status status;
    auto exact = timed.Exact(scope, context_key, input.model.geometry);
    if (!exact.ok()) {
      status = exact.status();
    } else if (*exact) {
      plan.decision = Decision::kExact;
      plan.kv = std::move(**exact);
    } else if (segment.placeholder &&
               !checks_.Estimates({scope.name_space, *scope.model, segment.slot, input.agent})) {
      counter.tokens_gated += segment.tokens.size();
    } else if (segment.placeholder) {
      auto planned = PlanPlaceholder(context, segment, position, next_blend);
      if (planned.ok()) plan = std::move(*planned);
      status = planned.status();
    } else if (blend && &segment != &input.segments.back()) {
      // The prompt's final segment is the agent's own suffix: prefilled, never estimated, as
      // its KV is where the answer forms (blending it would carry the anchors' answers).
      auto planned = PlanFollowing(context, segment, position, *blend);
      if (planned.ok()) plan = std::move(*planned);
      status = planned.status();
    }
    if (status.ok() && plan.decision != Decision::kPrefill &&
        plan.kv.layout.tokens != segment.tokens.size())
      status = Error(ErrorCode::kInternal, "planned KV of {} tokens for a segment of {}",
                     plan.kv.layout.tokens, segment.tokens.size());
    if (!status.ok()) {
      if (plan.kv.lease) (void)device_leases_->Release(plan.kv.lease->id);
      release_leases();
      return status;
    }
    (plan.decision == Decision::kExact       ? counter.tokens_exact
     : plan.decision == Decision::kRealigned ? counter.tokens_realigned
                                             : counter.tokens_prefill) += segment.tokens.size();
    counter.bytes_moved += plan.kv.bytes();
    if (segment.placeholder && plan.decision == Decision::kRealigned &&
        std::find(estimated.begin(), estimated.end(), segment.slot) == estimated.end())
      estimated.push_back(segment.slot);
    out.push_back(std::move(plan));
    blend = std::move(next_blend);
    preceding.insert(preceding.end(), segment.tokens.begin(), segment.tokens.end());
  }
  const double seconds = SecondsSince(start);
  context.Counter("").plan_seconds += seconds;
  uint64_t bytes = 0, exact = 0, realigned = 0;
  for (const auto& plan : out) {
    bytes += plan.kv.bytes();
    exact += plan.decision == Decision::kExact;
    realigned += plan.decision == Decision::kRealigned;
  }
  const TimedMath::Seconds& spent = timed.seconds();
  spdlog::debug(
      "plan of agent '{}' ({}): {} segments, {} exact, {} realigned, {} bytes, {:.2f} ms: "
      "{} loads {:.2f} ms, {} exact copies {:.2f} ms, {} decisions {:.2f} ms, {} blends {:.2f} ms",
      input.agent, delivery == Delivery::kDevice ? "device" : "frames", out.size(), exact,
      realigned, bytes, seconds * 1e3, spent.loads, spent.load * 1e3, spent.exacts,
      spent.exact * 1e3, spent.decides, spent.decide * 1e3, spent.blends, spent.blend * 1e3);
  for (const auto& [slot, counter] : context.counters) stats_.Add(counter);
  const bool check = !estimated.empty() &&
                     checks_.PlanEstimated(scope.name_space, *scope.model, estimated, input.agent);
  return PromptPlanOutput{std::move(out), check};
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

Result<SegmentPlanOutput> AnchorService::PlanPlaceholder(PlanContext& context,
                                                         const PlanSegmentInput& segment,
                                                         int32_t position,
                                                         std::optional<Blend>& blend) {
  const auto& scope = context.scope;
  const auto& model = context.input.model;
  const std::string& agent = context.input.agent;
  ReuseMath& math = context.math;
  const SegmentKey base_key = ComputeContextKey(*scope.model, scope.name_space,
                                                TokenPrefixHash(model.base_prefix), segment.tokens);
  SegmentPlanOutput plan;  // prefill unless decided otherwise
  KVCOMM_ASSIGN_OR_RETURN(auto base, math.Load(scope, base_key, model.geometry));
  if (!base) return plan;  // no base: nothing to realign from, and no anchor can be made
  const uint32_t tokens = static_cast<uint32_t>(segment.tokens.size());

  // Which anchors to blend, decided under the slot's lock on copies of the records.
  std::vector<AnchorSlot::Anchor> chosen;
  std::string delta_agent = agent;  // whose deltas the blend adds
  {
    SlotState& slot = Slot(scope, segment.slot);
    std::lock_guard lock(slot.mutex);
    const auto& anchors = slot.pool.anchors();
    for (size_t i = 0; i < anchors.size(); ++i) {
      if (anchors[i].base != base_key) continue;
      // This very content is an anchor: its own delta for this agent is the exact correction;
      // without one, another agent's is the content's KV in that agent's context.
      if (!anchors[i].deltas.contains(agent)) {
        if (!config_.borrow_deltas || anchors[i].deltas.empty()) {
          plan.report_actual = true;
          return plan;
        }
        delta_agent = anchors[i].deltas.begin()->first;
      }
      slot.pool.Credit({i});
      chosen.push_back(anchors[i]);
    }
    if (!chosen.empty()) slot.credits_unsaved = true;
    if (chosen.empty()) {
      KVCOMM_ASSIGN_OR_RETURN(Candidates candidates,
                              DecideOnCandidates(scope, math, model.geometry, slot.pool, base_key,
                                                 *base, segment.slot, agent));
      if (candidates.decision.prefill) {
        AddAnchor(scope, segment.slot, slot, base_key, tokens, context.Counter(segment.slot));
        plan.report_actual = true;
        return plan;
      }
      std::vector<size_t> credited;
      for (size_t k : candidates.decision.credited) credited.push_back(candidates.indices[k]);
      slot.pool.Credit(credited);
      slot.credits_unsaved = true;
      for (size_t i : candidates.indices) chosen.push_back(anchors[i]);
      std::vector<float> token_sums;
      if (candidates.decision.token_sums.size() == candidates.bases.size() * tokens * 3)
        token_sums = std::move(candidates.decision.token_sums);  // every base a candidate
      blend.emplace(
          Blend{segment.slot, {}, {}, std::move(candidates.bases), std::move(token_sums)});
    }
  }
  if (!blend) blend.emplace(Blend{segment.slot, {}, {}, {*base}, {}});

  const auto start = std::chrono::steady_clock::now();
  std::vector<MathKv> deltas;
  for (const auto& anchor : chosen) {
    KVCOMM_ASSIGN_OR_RETURN(
        auto delta, math.Load(scope, anchor.deltas.at(delta_agent).placeholder, model.geometry));
    if (!delta || delta->layout.tokens < tokens) {
      blend.reset();
      return plan;  // a delta left the store: compute instead
    }
    deltas.push_back(std::move(*delta));
  }
  KVCOMM_ASSIGN_OR_RETURN(
      plan.kv, math.BlendPlaceholder({*base, blend->anchor_bases, blend->token_sums, deltas,
                                      static_cast<int32_t>(model.base_prefix.size()), position},
                                     model.inv_freq, config_.temperature, model.geometry.dtype));
  context.Counter(segment.slot).realign_seconds += SecondsSince(start);
  plan.decision = Decision::kRealigned;
  blend->base = std::move(*base);
  blend->anchors = std::move(chosen);
  return plan;
}

Result<SegmentPlanOutput> AnchorService::PlanFollowing(PlanContext& context,
                                                       const PlanSegmentInput& segment,
                                                       int32_t position, const Blend& blend) {
  const auto& scope = context.scope;
  const auto& model = context.input.model;
  const std::string& agent = context.input.agent;
  ReuseMath& math = context.math;
  SegmentPlanOutput plan;
  KVCOMM_ASSIGN_OR_RETURN(
      auto base,
      math.Load(scope, FollowingBaseKey(scope, blend.slot, agent, segment.tokens), model.geometry));
  if (!base) return plan;
  // Anchors that saw this agent's very template segment after them.
  std::vector<MathKv> deltas, anchor_bases;
  for (size_t a = 0; a < blend.anchors.size(); ++a) {
    KVCOMM_ASSIGN_OR_RETURN(
        auto delta, math.Load(scope,
                              FollowingDeltaKey(scope, blend.slot, blend.anchors[a].base, agent,
                                                segment.tokens),
                              model.geometry));
    if (!delta || delta->layout.tokens != segment.tokens.size()) continue;
    deltas.push_back(std::move(*delta));
    anchor_bases.push_back(blend.anchor_bases[a]);
  }
  if (deltas.empty()) return plan;
  const auto start = std::chrono::steady_clock::now();
  KVCOMM_ASSIGN_OR_RETURN(
      plan.kv, math.BlendFollowing({*base, blend.base, anchor_bases, deltas, position},
                                   model.inv_freq, config_.temperature, model.geometry.dtype));
  context.Counter("").realign_seconds += SecondsSince(start);
  plan.decision = Decision::kRealigned;
  return plan;
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
  KVCOMM_RETURN_IF_ERROR(checks_.Record(scope.name_space, *scope.model, input.slots, input.agent,
                                        input.reply_changed, input.next_token_kl));
  for (const std::string& slot : input.slots) {
    ReuseCounter counter{scope.name_space, input.agent, slot};
    counter.checks = 1;
    counter.checks_changed = input.reply_changed;
    stats_.Add(counter);
  }
  if (input.reply_changed)
    spdlog::debug("check of agent '{}': the reply changed ({} slots, KL {:.4f})", input.agent,
                  input.slots.size(), input.next_token_kl);
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
