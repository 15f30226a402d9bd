// AnchorService's plans (PlanPrompt): per segment EXACT, REALIGNED from a base and the anchors'
// deltas, or PREFILL (../shared/KVCOMM.md); anchor_service.cc holds the rest of the service.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "daemon/anchor_service.h"
#include "daemon/internal/anchor_keys.h"
#include "daemon/timed_math.h"

namespace kvcomm::daemon {

using internal::FollowingBaseKey;
using internal::FollowingDeltaKey;
using internal::SecondsSince;

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

}  // namespace kvcomm::daemon
