// kvcomm client library: talks to kvcommd over a ZeroMQ DEALER socket.
//
//   auto client = Client::Connect({.endpoint = "ipc:///run/kvcomm/kvcommd.sock",
//                                  .name_space = "my-pipeline", .model = fingerprint});
//   auto info = (*client)->Put({.layout = layout, .payload = blob, .token_ids = ids});
//   auto segment = (*client)->Get(info->context_key);
//
// Every call has a deadline (ClientOptions::timeout, changeable per client); a daemon that is
// down or slow yields kUnavailable / kDeadlineExceeded, never a hang or a crash. Daemon errors
// come back as Status with the daemon's code and message. If the daemon restarted and forgot
// this client's session, the client says Hello again and retries the call once.
//
// Thread safety: a Client is used by one thread at a time (one socket); make one per thread.
// It does not link RocksDB or anything of the daemon.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/blob.h"
#include "common/keys.h"
#include "common/kv_layout.h"
#include "common/status.h"

namespace kvcomm::client {
namespace internal {
class Transport;
struct MappedArena;
}  // namespace internal

enum class KeyKind : uint8_t { kContext = 0, kContent = 1 };
enum class Tier : uint8_t { kNone = 0, kGpu = 1, kHost = 2, kDisk = 3 };
std::string_view TierName(Tier tier);

struct ClientOptions {
  std::string endpoint;  // empty: DefaultEndpoint()
  std::string client_name = "kvcomm-client";
  std::string name_space = "default";
  std::optional<ModelFingerprint> model;  // none: a read-only session
  std::chrono::milliseconds timeout{5000};
};

struct SegmentInfo {
  SegmentKey context_key;
  SegmentKey content_key;
  ModelFingerprint fingerprint;
  std::string name_space;
  KvLayout layout;
  uint64_t payload_bytes = 0;
  uint64_t checksum = 0;
  int32_t first_position = 0;
  int64_t created_unix_ms = 0;
  int64_t last_access_unix_ms = 0;
  uint64_t access_count = 0;
  Tier tier = Tier::kNone;
  bool has_token_ids = false;
};

struct PutRequest {
  KvLayout layout;
  Blob payload;                    // layout.PayloadBytes() bytes, sent without a copy
  std::vector<int32_t> token_ids;  // optional
  std::vector<int32_t> positions;  // optional
  int32_t first_position = 0;
  Hash128 prefix_hash;  // hash of the tokens before the segment
};

struct SegmentData {
  SegmentInfo info;
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;
  Hash128 prefix_hash;
  Blob payload;  // checksum verified on arrival
};

struct LookupEntry {
  bool found = false;
  Tier tier = Tier::kNone;
  SegmentKey context_key;
  uint32_t tokens = 0;
  uint64_t payload_bytes = 0;
};

struct ListPage {
  std::vector<SegmentInfo> segments;
  bool has_more = false;
};

struct TierStats {
  Tier tier = Tier::kNone;
  uint64_t segments = 0, bytes = 0, capacity_bytes = 0, hits = 0, misses = 0;
};

// Reuse counters of kvcommd's anchor service (one per namespace, agent and slot).
struct ReuseCounter {
  std::string name_space, agent, slot;  // slot "" for template segments
  uint64_t tokens_requested = 0, tokens_exact = 0, tokens_realigned = 0, tokens_prefill = 0;
  uint64_t anchors_created = 0, anchors_evicted = 0, bytes_moved = 0;
  double realign_seconds = 0;
  double plan_seconds = 0;  // kvcommd answering PlanPrompt (template counter only)
  // Answer-level checks of this slot's estimates: reported, of which the reply changed; and
  // the tokens prefilled because the checks stopped the slot's estimates for the agent.
  uint64_t checks = 0, checks_changed = 0, tokens_gated = 0;
};

struct DaemonStats {
  std::vector<TierStats> tiers;
  uint64_t puts = 0, gets = 0, promotions = 0, demotions = 0, evictions = 0, corrupt_records = 0;
  uint64_t bytes_in = 0, bytes_out = 0, requests = 0, sessions = 0;
  double uptime_seconds = 0;
  std::vector<std::pair<ErrorCode, uint64_t>> errors;
  std::vector<ReuseCounter> reuse;
};

// KVCOMM reuse (schemas/kvcomm.capnp, "KVCOMM reuse"): what kvcommd needs to know of the model.
struct ReuseModel {
  KvLayout geometry;  // layers, kv heads, head dim; dtype of the KV wanted back; tokens unused
  std::vector<float> rope_inv_freq;
  std::vector<int32_t> base_prefix;  // tokens a placeholder's base is computed after
};

struct PlanSegment {
  bool placeholder = false;
  std::string slot;  // placeholders only
  std::vector<int32_t> token_ids;
};

// How a plan's KV arrives (schemas/kvcomm.capnp, KvDelivery).
enum class Delivery : uint8_t {
  kFrames = 0,     // bytes in the reply
  kDeviceIpc = 1,  // in kvcommd's GPU arena, read in place (a worker on kvcommd's GPU; bf16)
};

struct PlanRequest {
  std::string agent;
  ReuseModel model;
  std::vector<PlanSegment> segments;  // the whole prompt, from position 0
  Delivery delivery = Delivery::kFrames;
};

enum class ReuseDecision : uint8_t { kExact = 0, kRealigned = 1, kPrefill = 2 };
std::string_view ReuseDecisionName(ReuseDecision decision);

struct SegmentPlan {
  ReuseDecision decision = ReuseDecision::kPrefill;
  bool report_actual = false;  // prefill it, then ReportActual: it becomes an anchor
  KvLayout layout;             // exact and realigned: the KV in `payload` or at `device`
  Blob payload;                // frames
  // Device delivery: the KV in this process's mapping of kvcommd's arena, readable until the
  // lease is released (ReleaseLeases) or expires.
  const std::byte* device = nullptr;
  uint64_t lease_id = 0;
};

struct PromptPlan {
  std::vector<SegmentPlan> segments;  // one per segment of the request
  // kvcommd asks for this turn to be computed in full as well and the outcome sent with
  // ReportCheck (schemas/kvcomm.capnp): it checks whether estimates change replies.
  bool check_reuse = false;
};

// The outcome of a check kvcommd asked for.
struct CheckReport {
  std::string agent;
  std::vector<std::string> slots;  // the placeholders' slots the turn used realigned KV for
  bool reply_changed = false;      // the reply differs from the full prefill's
  double next_token_kl = 0;        // KL(full || reuse) of the first reply token, nats
  // Of `slots`, those whose estimate alone changed the reply; empty when none did alone (all
  // share the change) or the reply did not change.
  std::vector<std::string> blamed_slots;
};

struct ActualReport {
  std::string agent, slot;
  ReuseModel model;
  std::vector<int32_t> placeholder_tokens;
  int32_t placeholder_position = 0;
  Blob placeholder_kv;                    // model.geometry with the placeholder's tokens
  std::vector<int32_t> following_tokens;  // the template segment after it; may be empty
  int32_t following_position = 0;
  Blob following_kv;
  // Unasked (ReportActual.offered in schemas/kvcomm.capnp): kept only if the content is or
  // becomes an anchor.
  bool offered = false;
};

// New content an agent computed before kvcommd held its base (OfferAnchor): asked before the
// offered ActualReport, whose KV kvcommd would otherwise drop.
struct AnchorOffer {
  std::string agent, slot;
  ReuseModel model;
  std::vector<int32_t> placeholder_tokens;
};

struct AnchorInfo {
  SegmentKey base_key;
  uint32_t tokens = 0;
  uint64_t activations = 0;
  std::vector<std::string> agents;
};
struct AnchorSlotInfo {
  std::string slot;
  std::vector<AnchorInfo> anchors;
};

// A stored segment compressed by kvcommd to a method and budget (schemas/kvcomm.capnp,
// "Compressed hand-out"; the strings as kvstore/compress/spec.h parses them).
struct CompressedFetch {
  SegmentKey key;
  KeyKind kind = KeyKind::kContext;
  std::string method;  // "snapkv:window=32,kernel=7"
  std::string budget;  // "25%", "128", "64KiB"; "" for quantizers
  std::string allocator = "uniform";
  DType row_dtype = DType::kBF16;  // how kept rows are stored
  // Query-aware methods: the observation window's queries after RoPE, fp32
  // [layers][q_heads][window][head_dim]; empty otherwise.
  uint32_t q_heads = 0, window = 0, head_dim = 0;
  std::vector<float> queries;
  bool queries_follow = false;       // laq: queries of a draft reply after the segment
  std::vector<float> rope_inv_freq;  // leverage / compactor: head_dim / 2 values
  std::vector<float> head_scores;    // duo: per (layer, kv head), from calibration
};
// Numbered as the protocol's CompressedCodec (and kvstore/compress's).
enum class CompressedCodec : uint8_t {
  kTokenSubset = 0,
  kKivi = 1,
  kMixed = 2,
  kGear = 3,
  kMiniCache = 4
};
struct CompressedSegment {
  SegmentInfo info;  // the segment it was made from
  CompressedCodec codec = CompressedCodec::kTokenSubset;
  std::vector<uint32_t> kept;  // token subset: per (layer, kv head)
  Blob bytes;                  // kvstore/compress/codec.h decodes them
};

class Client {
 public:
  // Connects and says Hello (checking the protocol version).
  static Result<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Status Hello();
  Status Ping();
  Result<SegmentInfo> Put(const PutRequest& request);
  // The same for KV on kvcommd's GPU: `write` fills the segment's payload (request.layout, in
  // the segment layout) at a device address in a lease of kvcommd's IPC arena, and kvcommd
  // stores it from there, so the bytes never cross the socket; request.payload is not used.
  // kUnavailable when kvcommd lends no arena, kFailedPrecondition on another GPU.
  Result<SegmentInfo> PutOnDevice(const PutRequest& request,
                                  const std::function<Status(std::byte* device)>& write);
  Result<SegmentData> Get(const SegmentKey& key, KeyKind kind = KeyKind::kContext);
  Result<std::vector<LookupEntry>> Lookup(const std::vector<std::pair<SegmentKey, KeyKind>>& keys);
  Status Remove(const SegmentKey& context_key);
  Result<ListPage> List(std::optional<SegmentKey> start_after, uint32_t limit);
  Result<DaemonStats> Stats();
  // KVCOMM: one plan per segment of the prompt, with the KV of exact and realigned ones.
  Result<PromptPlan> PlanPrompt(const PlanRequest& request);
  Status ReportActual(const ActualReport& report);
  // The same with the KV on kvcommd's GPU: `write` fills the placeholder's KV and then the
  // following segment's (report.placeholder_kv and following_kv are not used; their layouts
  // come from the model and token counts) at device addresses in a lease of kvcommd's arena.
  // Errors as for PutOnDevice.
  Status ReportActualOnDevice(
      const ActualReport& report,
      const std::function<Status(std::byte* placeholder, std::byte* following)>& write);
  // Whether kvcommd wants the offered report of new content (it is or becomes an anchor).
  Result<bool> OfferAnchor(const AnchorOffer& offer);
  Status ReportCheck(const CheckReport& report);
  // Gives back device-delivered KV; returns how many leases were still held (the others had
  // expired: their KV may have been overwritten).
  Result<uint32_t> ReleaseLeases(const std::vector<uint64_t>& ids);
  Result<std::vector<AnchorSlotInfo>> ListAnchors();
  Result<CompressedSegment> GetCompressed(const CompressedFetch& fetch);

  void set_timeout(std::chrono::milliseconds timeout) { options_.timeout = timeout; }
  const ClientOptions& options() const { return options_; }

 private:
  explicit Client(ClientOptions options);
  Status CheckPut(const PutRequest& put) const;
  // A PutSegment whose payload is `payload`, or in lease `lease` (payload then empty).
  Result<SegmentInfo> SendPut(const PutRequest& put, const Blob& payload, uint64_t lease);
  // Reserves a lease of `bytes` in kvcommd's arena and lets `write` fill it; its id, or the
  // error (the lease then given back).
  Result<uint64_t> WriteLease(uint64_t bytes, const std::function<Status(std::byte*)>& write);
  // A ReportActual with the KV in frames (lease 0) or in `lease`.
  Status SendReport(const ActualReport& report, uint64_t lease);

  ClientOptions options_;
  std::unique_ptr<internal::Transport> transport_;
  std::unique_ptr<internal::MappedArena> arena_;  // of device delivery, mapped on first use
};

}  // namespace kvcomm::client
