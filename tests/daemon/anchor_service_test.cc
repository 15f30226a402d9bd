// The anchor service on a real (in-memory) store: plans, anchors made from reports, realigned
// KV checked against the rotation reference, reuse with several anchors, eviction, bad input.
#include "daemon/anchor_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "kernels/realign.h"

namespace kvcomm::daemon {
namespace {

constexpr uint32_t kLayers = 3, kHeads = 2, kDim = 8;
const std::vector<int32_t> kBasePrefix = {1, 2};

KvLayout Geometry(uint32_t tokens) { return {kLayers, kHeads, tokens, kDim, DType::kF32}; }

KvF32 Random(uint32_t tokens, uint32_t seed) {
  KvF32 kv{Geometry(tokens), std::vector<float>(Geometry(tokens).PayloadBytes() / 4)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  for (auto& x : kv.data) x = normal(rng);
  return kv;
}

std::vector<float> InvFreq() {
  std::vector<float> f(kDim / 2);
  for (uint32_t i = 0; i < f.size(); ++i) f[i] = std::pow(10000.f, -2.f * i / kDim);
  return f;
}

// `kv` moved from positions first.. to target.., plus `delta` (position-free) on layers >= 1.
KvF32 Moved(const KvF32& kv, int32_t first, int32_t target,
            const std::vector<float>* delta = nullptr) {
  const uint32_t n = kv.layout.tokens;
  std::vector<int32_t> from(n), to(n);
  std::iota(from.begin(), from.end(), first);
  std::iota(to.begin(), to.end(), target);
  kernels::RealignShape shape{kLayers, kHeads, n, kDim, delta ? 1 : 0};
  std::vector<float> weights(n, 1.f);
  KvF32 out{kv.layout, std::vector<float>(kv.data.size())};
  kernels::cpu::RealignKv(shape, kv.data.data(), from, to, InvFreq(),
                          delta ? delta->data() : nullptr, weights.data(), weights.data(),
                          out.data.data());
  return out;
}

void ExpectNear(std::span<const std::byte> bytes, const KvF32& expected) {
  ASSERT_EQ(bytes.size(), expected.data.size() * 4);
  const float* got = reinterpret_cast<const float*>(bytes.data());
  double worst = 0;
  for (size_t i = 0; i < expected.data.size(); ++i)
    worst = std::max(worst, std::abs(double{got[i]} - expected.data[i]));
  EXPECT_LT(worst, 1e-4);
}

std::vector<int32_t> Tokens(int32_t first, int32_t count) {
  std::vector<int32_t> t(count);
  std::iota(t.begin(), t.end(), first);
  return t;
}

class AnchorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kvstore::StoreOptions options;
    options.persist = false;
    options.host_capacity_bytes = 64 << 20;
    store_ = std::move(kvstore::TieredStore::Open(options)).value();
    config_.capacity = 3;
    config_.eviction_window = 2;
    service_ = std::make_unique<AnchorService>(*store_, config_);
    model_.geometry = Geometry(0);
    model_.inv_freq = InvFreq();
    model_.base_prefix = kBasePrefix;
  }

  void TearDown() override {
    service_.reset();
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Closes the service and the store and opens them again on a RocksDB directory (kvcommd
  // restarting), restoring the pools.
  AnchorService::RestoreSummary Restart() {
    service_.reset();
    store_.reset();
    if (dir_.empty())
      dir_ = (std::filesystem::temp_directory_path() /
              ("kvcomm_anchor_service_" + std::to_string(::getpid())))
                 .string();
    kvstore::StoreOptions options;
    options.persist = true;
    options.data_dir = dir_;
    options.host_capacity_bytes = 64 << 20;
    store_ = std::move(kvstore::TieredStore::Open(options)).value();
    service_ = std::make_unique<AnchorService>(*store_, config_);
    auto restored = service_->Restore();
    EXPECT_TRUE(restored.ok()) << restored.status().ToString();
    return restored.ok() ? *restored : AnchorService::RestoreSummary{};
  }

  // Stores base(P): the placeholder's KV right after the base prefix, as agents do.
  void PutBase(const std::vector<int32_t>& tokens, const KvF32& kv) {
    kvstore::SegmentMeta meta;
    meta.context_key =
        ComputeContextKey(*scope_.model, scope_.name_space, TokenPrefixHash(kBasePrefix), tokens);
    meta.content_key = ComputeContentKey(*scope_.model, scope_.name_space, tokens);
    meta.fingerprint = *scope_.model;
    meta.name_space = scope_.name_space;
    meta.layout = kv.layout;
    meta.token_ids = tokens;
    meta.first_position = static_cast<int32_t>(kBasePrefix.size());
    Blob payload = Blob::FromVector(std::vector<std::byte>(
        reinterpret_cast<const std::byte*>(kv.data.data()),
        reinterpret_cast<const std::byte*>(kv.data.data() + kv.data.size())));
    meta.payload_bytes = payload.size();
    meta.checksum = Checksum64(payload.span());
    ASSERT_TRUE(store_->Put(std::move(meta), std::move(payload)).ok());
  }

  // A prompt: `lead` template tokens, the placeholder, a following template segment, a final one.
  PlanInput Prompt(const std::string& agent, int32_t lead,
                   const std::vector<int32_t>& placeholder) {
    PlanInput input{agent, model_, {}};
    input.segments.push_back({false, "", Tokens(100, lead)});
    input.segments.push_back({true, "slot", placeholder});
    input.segments.push_back({false, "", {200, 201, 202}});
    input.segments.push_back({false, "", {300}});
    return input;
  }

  std::vector<SegmentPlanOutput> Plan(const PlanInput& input) {
    auto plan = service_->Plan(scope_, input);
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    return plan.ok() ? std::move(plan->segments)
                     : std::vector<SegmentPlanOutput>(input.segments.size());
  }

  Status Report(const std::string& agent, const std::vector<int32_t>& placeholder, int32_t position,
                const KvF32& actual, const KvF32& following, bool offered = false) {
    ActualInput input{
        agent,    "slot", model_,          placeholder,
        position, {},     {200, 201, 202}, position + static_cast<int32_t>(placeholder.size()),
        {}};
    input.offered = offered;
    input.placeholder_kv = *EncodeKv(actual, DType::kF32);
    input.following_kv = *EncodeKv(following, DType::kF32);
    return service_->ReportActual(scope_, input);
  }

  // Makes `placeholder` an anchor of agent "a" whose actual KV is its base plus `delta`.
  void MakeAnchor(const std::vector<int32_t>& placeholder, const KvF32& base,
                  const std::vector<float>& delta) {
    auto plan = Plan(Prompt("a", 5, placeholder));
    ASSERT_EQ(plan[1].decision, Decision::kPrefill);
    ASSERT_TRUE(plan[1].report_actual);
    const auto actual = Moved(base, 2, 5, &delta);
    ASSERT_TRUE(Report("a", placeholder, 5, actual, Random(3, 99)).ok());
  }

  bool IsStoredForTest(const SegmentKey& key) const {
    return store_->Lookup({{key, kvstore::KeyKind::kContext}}, scope_).front().found;
  }

  std::unique_ptr<kvstore::TieredStore> store_;
  AnchorPoolConfig config_;
  std::unique_ptr<AnchorService> service_;
  std::string dir_;
  size_t AnchorCount() const {
    const auto listed = service_->List(scope_);
    return listed.empty() ? size_t{0} : listed[0].anchors.size();
  }

  // Two 6-token anchors of "slot" with a's deltas, and the base of Tokens(40, 4): content so
  // close to the first that the pool estimates it.
  void StoreContentCloseToTwoNewAnchors() {
    std::vector<float> delta(Geometry(6).PayloadBytes() / 4, 0.1f);
    const KvF32 base1 = Random(6, 11), base2 = Random(6, 12);
    PutBase(Tokens(20, 6), base1);
    PutBase(Tokens(30, 6), base2);
    MakeAnchor(Tokens(20, 6), base1, delta);
    MakeAnchor(Tokens(30, 6), base2, delta);
    KvF32 close = FirstTokens(base1, 4);
    for (float& x : close.data) x += 0.001f;
    PutBase(Tokens(40, 4), close);
  }

  ReuseModel model_;
  kvstore::Scope scope_{"ns", Hash128{7, 7}};
};

TEST_F(AnchorServiceTest, AnAnchorsOwnDeltasReproduceItsActualKvAtANewPosition) {
  const auto p = Tokens(10, 4);
  const KvF32 base = Random(4, 1);
  PutBase(p, base);
  auto first = Plan(Prompt("a", 5, p));
  ASSERT_EQ(first.size(), 4u);
  for (const auto& s : first) EXPECT_EQ(s.decision, Decision::kPrefill);
  EXPECT_TRUE(first[1].report_actual);  // an empty pool: the placeholder becomes an anchor
  EXPECT_FALSE(first[0].report_actual);

  const KvF32 actual = Random(4, 2), following = Random(3, 3);
  ASSERT_TRUE(Report("a", p, 5, actual, following).ok());

  // Two tokens further on: the placeholder and the segment after it come back realigned.
  auto second = Plan(Prompt("a", 7, p));
  ASSERT_EQ(second[1].decision, Decision::kRealigned);
  ASSERT_EQ(second[2].decision, Decision::kRealigned);
  EXPECT_EQ(second[3].decision, Decision::kPrefill);  // the agent's final suffix, always computed
  KvF32 expected = Moved(actual, 5, 7);
  // Layer 0 is never blended: it is the base, moved (it depends on token and position only).
  const KvF32 base_moved = Moved(base, 2, 7);
  const size_t layer0 = Geometry(4).Offset(1, 0, 0, 0) / 4;
  std::copy_n(base_moved.data.begin(), layer0, expected.data.begin());
  ExpectNear(second[1].kv.kv.span(), expected);
  ExpectNear(second[2].kv.kv.span(), Moved(following, 9, 11));

  const auto stats = service_->Stats();
  uint64_t realigned = 0, created = 0;
  for (const auto& c : stats) {
    realigned += c.tokens_realigned;
    created += c.anchors_created;
  }
  EXPECT_EQ(realigned, 4u + 3u);
  EXPECT_EQ(created, 1u);
}

TEST_F(AnchorServiceTest, AnAgentWithoutItsOwnDeltasReportsOrBorrowsAnother) {
  const auto p = Tokens(50, 4);
  const KvF32 base = Random(4, 21), actual = Random(4, 22);
  PutBase(p, base);
  config_.borrow_deltas = false;
  service_ = std::make_unique<AnchorService>(*store_, config_);
  ASSERT_TRUE(Plan(Prompt("a", 5, p))[1].report_actual);
  ASSERT_TRUE(Report("a", p, 5, actual, Random(3, 23)).ok());
  // KVCOMM's rule: agent b computes the anchor's content in its own prompt and reports it.
  auto reported = Plan(Prompt("b", 8, p));
  EXPECT_EQ(reported[1].decision, Decision::kPrefill);
  EXPECT_TRUE(reported[1].report_actual);

  // Borrowing: b gets the content as a's prompt held it, moved to where b has it.
  config_.borrow_deltas = true;
  service_ = std::make_unique<AnchorService>(*store_, config_);
  ASSERT_TRUE(Plan(Prompt("a", 5, p))[1].report_actual);  // a fresh pool: the anchor again
  ASSERT_TRUE(Report("a", p, 5, actual, Random(3, 23)).ok());
  auto borrowed = Plan(Prompt("b", 8, p));
  ASSERT_EQ(borrowed[1].decision, Decision::kRealigned);
  EXPECT_FALSE(borrowed[1].report_actual);
  KvF32 expected = Moved(actual, 5, 8);
  const KvF32 base_moved = Moved(base, 2, 8);
  const size_t layer0 = Geometry(4).Offset(1, 0, 0, 0) / 4;
  std::copy_n(base_moved.data.begin(), layer0, expected.data.begin());
  ExpectNear(borrowed[1].kv.kv.span(), expected);
  // b has no copy of its own template segment after it: that is computed.
  EXPECT_EQ(borrowed[2].decision, Decision::kPrefill);
}

TEST_F(AnchorServiceTest, ChecksThatFindChangedRepliesStopTheSlotsEstimatesForThatAgent) {
  const auto p = Tokens(60, 4);
  PutBase(p, Random(4, 31));
  auto anchor = service_->Plan(scope_, Prompt("a", 5, p));
  ASSERT_TRUE(anchor.ok()) << anchor.status().ToString();
  EXPECT_FALSE(anchor->check_reuse);  // nothing estimated: nothing to check
  ASSERT_TRUE(Report("a", p, 5, Random(4, 32), Random(3, 33)).ok());
  for (int i = 0; i < 2; ++i) {  // the default: the first two plans of a slot are checked
    auto plan = service_->Plan(scope_, Prompt("a", 7, p));
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    ASSERT_EQ(plan->segments[1].decision, Decision::kRealigned);
    EXPECT_TRUE(plan->check_reuse);
    ASSERT_TRUE(service_->ReportCheck(scope_, {"a", {"slot"}, true, 0.3, {}}).ok());
  }
  auto gated = service_->Plan(scope_, Prompt("a", 7, p));
  ASSERT_TRUE(gated.ok()) << gated.status().ToString();
  EXPECT_EQ(gated->segments[1].decision, Decision::kPrefill);
  EXPECT_FALSE(gated->segments[1].report_actual);  // not an anchor either: just computed
  EXPECT_EQ(gated->segments[2].decision, Decision::kPrefill);
  EXPECT_FALSE(gated->check_reuse);
  // Another agent's estimates of the slot are untouched (b borrows a's delta).
  EXPECT_EQ(Plan(Prompt("b", 7, p))[1].decision, Decision::kRealigned);

  bool found = false;
  for (const auto& c : service_->Stats()) {
    if (c.agent != "a" || c.slot != "slot") continue;
    found = true;
    EXPECT_EQ(c.checks, 2u);
    EXPECT_EQ(c.checks_changed, 2u);
    EXPECT_EQ(c.tokens_gated, 4u);
  }
  EXPECT_TRUE(found);

  EXPECT_EQ(service_->ReportCheck(scope_, {"a", {}, false, 0, {}}).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->ReportCheck(scope_, {"a", {"slot", "slot"}, false, 0, {}}).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->ReportCheck(scope_, {"a", {"slot"}, false, INFINITY, {}}).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->ReportCheck(scope_, {"a", {"other"}, false, 0, {}}).code(),
            ErrorCode::kNotFound);
  // Blame only for a changed reply, and only of the slots checked.
  EXPECT_EQ(service_->ReportCheck(scope_, {"a", {"slot"}, true, 0, {"other"}}).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->ReportCheck(scope_, {"a", {"slot"}, false, 0, {"slot"}}).code(),
            ErrorCode::kInvalidArgument);
  for (const auto& c : service_->Stats()) {
    if (c.agent == "a" && c.slot == "slot") {
      EXPECT_EQ(c.checks, 2u);  // none of those counted
    }
  }
}

TEST_F(AnchorServiceTest, ANewPlaceholderIsBaseMovedPlusTheAnchorsDeltas) {
  // Both anchors deviate from their bases by the same delta, so any blend of them is it.
  std::vector<float> delta(Geometry(6).PayloadBytes() / 4);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0, 0.3f);
  for (auto& x : delta) x = normal(rng);
  const KvF32 base1 = Random(6, 11), base2 = Random(6, 12);
  PutBase(Tokens(20, 6), base1);
  PutBase(Tokens(30, 6), base2);
  MakeAnchor(Tokens(20, 6), base1, delta);
  MakeAnchor(Tokens(30, 6), base2, delta);

  // A shorter placeholder, close to the first anchor.
  KvF32 base3 = Random(4, 13);
  for (uint32_t r = 0; r < kLayers * 2 * kHeads; ++r)
    for (uint32_t i = 0; i < 4 * kDim; ++i)
      base3.data[r * 4 * kDim + i] =
          base1.data[r * 6 * kDim + i] + 0.01f * base3.data[r * 4 * kDim + i];
  PutBase(Tokens(40, 4), base3);
  auto plan = Plan(Prompt("a", 9, Tokens(40, 4)));
  ASSERT_EQ(plan[1].decision, Decision::kRealigned);
  EXPECT_FALSE(plan[1].report_actual);
  std::vector<float> delta4 = FirstTokens({Geometry(6), delta}, 4).data;
  KvF32 expected = Moved(base3, 2, 9, &delta4);
  ExpectNear(plan[1].kv.kv.span(), expected);

  // Another agent has no deltas for these anchors: it computes, and reports.
  auto other = Plan(Prompt("b", 9, Tokens(40, 4)));
  EXPECT_EQ(other[1].decision, Decision::kPrefill);
  EXPECT_TRUE(other[1].report_actual);
}

TEST_F(AnchorServiceTest, AnOfferedReportIsKeptOnlyWhereTheContentBecomesAnAnchor) {
  // New content, offered unasked into an empty pool: it becomes an anchor with a's deltas, and
  // a's next plan of it is its actual KV moved, as if a plan had asked for the report.
  const auto p = Tokens(10, 4);
  const KvF32 base = Random(4, 1), actual = Random(4, 2);
  PutBase(p, base);
  ASSERT_TRUE(Report("a", p, 5, actual, Random(3, 3), /*offered=*/true).ok());
  EXPECT_EQ(AnchorCount(), 1u);
  auto again = Plan(Prompt("a", 7, p));
  ASSERT_EQ(again[1].decision, Decision::kRealigned);
  KvF32 expected = Moved(actual, 5, 7);
  const KvF32 base_moved = Moved(base, 2, 7);
  std::copy_n(base_moved.data.begin(), Geometry(4).Offset(1, 0, 0, 0) / 4, expected.data.begin());
  ExpectNear(again[1].kv.kv.span(), expected);

  // Content that anchors with a's deltas are close enough to estimate makes no anchor: the
  // offer is dropped (and is no error).
  StoreContentCloseToTwoNewAnchors();
  ASSERT_EQ(AnchorCount(), 3u);
  EXPECT_TRUE(Report("a", Tokens(40, 4), 9, Random(4, 7), Random(3, 8), /*offered=*/true).ok());
  EXPECT_EQ(AnchorCount(), 3u);
  EXPECT_EQ(Plan(Prompt("a", 9, Tokens(40, 4)))[1].decision, Decision::kRealigned);
  // Unoffered, a report of content that is no anchor is refused, as before.
  PutBase(Tokens(60, 4), Random(4, 9));
  EXPECT_EQ(Report("a", Tokens(60, 4), 5, Random(4, 10), Random(3, 11)).code(),
            ErrorCode::kNotFound);
}

// OfferAnchor answers before any KV is sent: it makes new content an anchor (and the offered
// report fills its deltas) and turns down what the pool's anchors already estimate.
TEST_F(AnchorServiceTest, AnOfferIsWantedOnlyWhereTheContentIsOrBecomesAnAnchor) {
  auto offer = [&](const std::vector<int32_t>& content) {
    return service_->OfferAnchor(scope_, {"a", "slot", model_, content});
  };
  EXPECT_EQ(offer(Tokens(10, 4)).status().code(), ErrorCode::kNotFound);  // no base stored
  const KvF32 base = Random(4, 1), actual = Random(4, 2);
  PutBase(Tokens(10, 4), base);
  auto first = offer(Tokens(10, 4));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(*first);
  EXPECT_EQ(AnchorCount(), 1u);  // made an anchor by the offer, without deltas yet
  auto again = offer(Tokens(10, 4));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*again);  // already an anchor
  EXPECT_EQ(AnchorCount(), 1u);
  ASSERT_TRUE(Report("a", Tokens(10, 4), 5, actual, Random(3, 3), /*offered=*/true).ok());
  EXPECT_EQ(Plan(Prompt("a", 7, Tokens(10, 4)))[1].decision, Decision::kRealigned);

  StoreContentCloseToTwoNewAnchors();
  ASSERT_EQ(AnchorCount(), 3u);
  auto estimated = offer(Tokens(40, 4));
  ASSERT_TRUE(estimated.ok());
  EXPECT_FALSE(*estimated);
  EXPECT_EQ(AnchorCount(), 3u);

  OfferInput bad{"a", "slot", model_, {}};
  EXPECT_EQ(service_->OfferAnchor(scope_, bad).status().code(), ErrorCode::kInvalidArgument);
  bad = {"a", "", model_, Tokens(40, 4)};
  EXPECT_EQ(service_->OfferAnchor(scope_, bad).status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(AnchorServiceTest, ARestartKeepsThePoolsAndDropsWhatLeftTheStore) {
  EXPECT_EQ(Restart().slots, 0u);  // from here on the store persists
  std::vector<float> delta(Geometry(6).PayloadBytes() / 4, 0.2f);
  const KvF32 base1 = Random(6, 21), base2 = Random(6, 22);
  KvF32 base3 = Random(6, 23);  // close to the first anchor
  for (size_t i = 0; i < base3.data.size(); ++i)
    base3.data[i] = base1.data[i] + 0.01f * base3.data[i];
  PutBase(Tokens(20, 6), base1);
  PutBase(Tokens(30, 6), base2);
  MakeAnchor(Tokens(20, 6), base1, delta);
  MakeAnchor(Tokens(30, 6), base2, delta);
  PutBase(Tokens(40, 6), base3);
  const auto before = Plan(Prompt("a", 9, Tokens(40, 6)));
  ASSERT_EQ(before[1].decision, Decision::kRealigned);
  const auto listed = service_->List(scope_);

  auto summary = Restart();
  EXPECT_EQ(summary.slots, 1u);
  EXPECT_EQ(summary.anchors, 2u);
  EXPECT_EQ(summary.dropped_anchors + summary.dropped_deltas + summary.bad_records, 0u);
  const auto relisted = service_->List(scope_);
  ASSERT_EQ(relisted.size(), 1u);
  ASSERT_EQ(relisted[0].anchors.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(relisted[0].anchors[i].base, listed[0].anchors[i].base);
    EXPECT_EQ(relisted[0].anchors[i].activations, listed[0].anchors[i].activations);
    EXPECT_TRUE(relisted[0].anchors[i].deltas.contains("a"));
  }
  // The same plan realigns to the very same KV after the restart.
  const auto after = Plan(Prompt("a", 9, Tokens(40, 6)));
  ASSERT_EQ(after[1].decision, Decision::kRealigned);
  ASSERT_EQ(after[1].kv.kv.size(), before[1].kv.kv.size());
  EXPECT_EQ(std::memcmp(after[1].kv.kv.data(), before[1].kv.kv.data(), after[1].kv.kv.size()), 0);

  // Segments that leave the store while kvcommd is down leave the pool too.
  const auto& first = relisted[0].anchors[0];
  ASSERT_TRUE(store_->Delete(first.deltas.at("a").placeholder, scope_).ok());
  ASSERT_TRUE(store_->Delete(relisted[0].anchors[1].base, scope_).ok());
  summary = Restart();
  EXPECT_EQ(summary.dropped_deltas, 1u);
  EXPECT_EQ(summary.dropped_anchors, 1u);
  EXPECT_EQ(summary.anchors, 1u);
  const auto pruned = service_->List(scope_);
  ASSERT_EQ(pruned[0].anchors.size(), 1u);
  EXPECT_TRUE(pruned[0].anchors[0].deltas.empty());
  EXPECT_FALSE(IsStoredForTest(first.deltas.at("a").following));  // its other half went too
  EXPECT_EQ(Restart().anchors, 1u);  // the pruned record was written back
}

TEST_F(AnchorServiceTest, ASegmentStoredAfterTheSameTokensIsExactInAnyDtype) {
  const auto p = Tokens(10, 4);
  const KvF32 base = Random(4, 1);
  PutBase(p, base);  // stored right after kBasePrefix: a prompt starting so has it exactly
  PlanInput input{"a", model_, {{false, "", kBasePrefix}, {true, "slot", p}}};
  auto plan = Plan(input);
  EXPECT_EQ(plan[0].decision, Decision::kPrefill);
  ASSERT_EQ(plan[1].decision, Decision::kExact);
  EXPECT_FALSE(plan[1].report_actual);
  ExpectNear(plan[1].kv.kv.span(), base);
  input.model.geometry.dtype = DType::kBF16;
  plan = Plan(input);
  ASSERT_EQ(plan[1].decision, Decision::kExact);
  ASSERT_EQ(plan[1].kv.layout.dtype, DType::kBF16);
  auto back = DecodeKv(plan[1].kv.layout, plan[1].kv.kv.span());
  ASSERT_TRUE(back.ok());
  for (size_t i = 0; i < base.data.size(); ++i)
    EXPECT_NEAR(back->data[i], base.data[i], 1e-2 * std::abs(base.data[i]) + 1e-6);
}

TEST_F(AnchorServiceTest, APlaceholderWithoutABaseIsPrefilledAndNeverAnAnchor) {
  auto plan = Plan(Prompt("a", 5, Tokens(50, 3)));
  EXPECT_EQ(plan[1].decision, Decision::kPrefill);
  EXPECT_FALSE(plan[1].report_actual);
  EXPECT_EQ(service_->List(scope_).size(), 0u);
  Status report = Report("a", Tokens(50, 3), 5, Random(3, 1), Random(3, 2));
  EXPECT_EQ(report.code(), ErrorCode::kNotFound) << report.ToString();
}

TEST_F(AnchorServiceTest, AFullPoolEvictsTheLeastActivatedOfTheOldestAndDropsItsDeltas) {
  // Each placeholder is longer than every anchor before it, so none can stand in for it (too
  // short): each one becomes an anchor.
  std::vector<KvF32> bases;
  for (uint32_t i = 0; i < 4; ++i) {
    bases.push_back(Random(3 + i, 60 + i));
    PutBase(Tokens(1000 + 10 * i, 3 + i), bases.back());
  }
  const uint64_t segments_before = store_->Stats().tiers[0].segments;
  for (uint32_t i = 0; i < 3; ++i) {
    MakeAnchor(Tokens(1000 + 10 * i, 3 + i), bases[i],
               std::vector<float>(Geometry(3 + i).PayloadBytes() / 4, 0.1f));
  }
  // 3 anchors, each with a placeholder delta and a following delta, and one following base.
  EXPECT_EQ(store_->Stats().tiers[0].segments, segments_before + 3 * 2 + 1);
  auto plan = Plan(Prompt("a", 5, Tokens(1030, 6)));
  ASSERT_EQ(plan[1].decision, Decision::kPrefill);
  ASSERT_TRUE(plan[1].report_actual);
  auto slots = service_->List(scope_);
  ASSERT_EQ(slots.size(), 1u);
  ASSERT_EQ(slots[0].anchors.size(), 3u);
  const SegmentKey oldest = ComputeContextKey(*scope_.model, scope_.name_space,
                                              TokenPrefixHash(kBasePrefix), Tokens(1000, 3));
  for (const auto& a : slots[0].anchors) EXPECT_NE(a.base, oldest);
  EXPECT_EQ(store_->Stats().tiers[0].segments, segments_before + 2 * 2 + 1);
  uint64_t evicted = 0;
  for (const auto& c : service_->Stats()) evicted += c.anchors_evicted;
  EXPECT_EQ(evicted, 1u);
}

TEST_F(AnchorServiceTest, BadInputIsRefusedWithAReason) {
  PlanInput input = Prompt("a", 5, Tokens(10, 4));
  input.model.inv_freq.pop_back();
  auto plan = service_->Plan(scope_, input);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("ropeInvFreq"), std::string::npos);

  input = Prompt("", 5, Tokens(10, 4));
  EXPECT_EQ(service_->Plan(scope_, input).status().code(), ErrorCode::kInvalidArgument);
  input = Prompt("a", 5, Tokens(10, 4));
  input.segments[1].slot.clear();
  EXPECT_NE(service_->Plan(scope_, input).status().message().find("slot"), std::string::npos);
  input = Prompt("agent\nname", 5, Tokens(10, 4));
  EXPECT_NE(service_->Plan(scope_, input).status().message().find("printable ASCII"),
            std::string::npos);
  input = Prompt("a", 5, Tokens(10, 4));
  input.segments[2].tokens.clear();
  EXPECT_EQ(service_->Plan(scope_, input).status().code(), ErrorCode::kInvalidArgument);

  ActualInput report{"a", "slot", model_, Tokens(10, 4), 5, {}, {}, 0, {}};
  report.placeholder_kv = *EncodeKv(Random(3, 1), DType::kF32);  // 3 tokens of KV for 4
  auto status = service_->ReportActual(scope_, report);
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.message().find("placeholder KV"), std::string::npos) << status.ToString();
}

}  // namespace
}  // namespace kvcomm::daemon
