# kvcomm wire protocol.
#
# Transport: ZeroMQ. Clients use DEALER sockets, kvcommd a ROUTER. A message is multipart:
#   frame 0      a Cap'n Proto Request or Reply (unpacked, single segment list)
#   frames 1..n  tensor bytes, in the order of the `tensors` list of the message; each frame is
#                described there (dtype, shape, byte length, XXH3-64 checksum).
# Every Reply carries the id of the Request it answers, so a client may pipeline requests.
#
# Versioning: `protocolVersion` below. A client states its version in Hello; kvcommd refuses
# versions it does not speak with a versionMismatch error. New fields are only ever appended.
@0xf62383c9e8862a45;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kvcomm::proto");

const protocolVersion :UInt32 = 1;

# Same values as kvcomm::ErrorCode (common/status.h).
enum ErrorCode {
  ok @0;
  invalidArgument @1;
  notFound @2;
  alreadyExists @3;
  failedPrecondition @4;
  versionMismatch @5;
  fingerprintMismatch @6;
  permissionDenied @7;
  resourceExhausted @8;
  dataLoss @9;
  unavailable @10;
  deadlineExceeded @11;
  internal @12;
  malformedMessage @13;
}

# Same values as kvcomm::DType (common/dtype.h).
enum DType {
  f32 @0;
  f16 @1;
  bf16 @2;
  i32 @3;
}

enum Tier {
  none @0;
  gpu @1;
  host @2;
  disk @3;
}

enum Codec {
  raw @0;
}

enum KeyKind {
  context @0;   # hash(model, namespace, preceding tokens, token ids): exact reuse
  content @1;   # hash(model, namespace, token ids): the same text anywhere
}

struct Key128 {
  hi @0 :UInt64;
  lo @1 :UInt64;
}

struct TensorDesc {
  name @0 :Text;
  dtype @1 :DType;
  shape @2 :List(UInt64);
  byteLength @3 :UInt64;
  checksum @4 :UInt64;   # XXH3-64 of the frame's bytes
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
}

# The KV layout: [layer][K|V][kvHeads][tokens][headDim], keys after RoPE.
struct KvShape {
  numLayers @0 :UInt32;
  kvHeads @1 :UInt32;
  tokens @2 :UInt32;
  headDim @3 :UInt32;
  dtype @4 :DType;
}

struct SegmentInfo {
  contextKey @0 :Key128;
  contentKey @1 :Key128;
  fingerprint @2 :Key128;
  namespace @3 :Text;
  shape @4 :KvShape;
  codec @5 :Codec;
  payloadBytes @6 :UInt64;
  checksum @7 :UInt64;
  firstPosition @8 :Int32;    # position of the first token (positions list may refine it)
  createdUnixMs @9 :Int64;
  lastAccessUnixMs @10 :Int64;
  accessCount @11 :UInt64;
  tier @12 :Tier;             # highest tier holding it when the reply was made
  hasTokenIds @13 :Bool;
}

struct Hello {
  clientName @0 :Text;
  protocolVersion @1 :UInt32;
  fingerprint @2 :Key128;     # zero: no model; the session may read and list but not write
  namespace @3 :Text;
}

struct HelloResult {
  serverName @0 :Text;
  protocolVersion @1 :UInt32;
  maxRequestBytes @2 :UInt64;
}

# Frame 1 holds the payload (described by tensors[0], named "kv", shaped
# [numLayers, 2, kvHeads, tokens, headDim]), unless `lease` says where it is.
struct PutSegment {
  shape @0 :KvShape;
  codec @1 :Codec;
  tokenIds @2 :List(Int32);   # optional; empty means unknown (content key from the payload)
  positions @3 :List(Int32);  # optional; empty means firstPosition .. firstPosition + tokens - 1
  firstPosition @4 :Int32;
  prefixHash @5 :Key128;      # hash of all tokens before this segment (zero: none)
  tensors @6 :List(TensorDesc);
  lease @7 :UInt64;           # nonzero: the payload is in this lease of kvcommd's IPC arena
                              # (ReserveLease), written there by a worker on kvcommd's GPU; no
                              # payload frame, and kvcommd computes the checksum (tensors[0]'s
                              # is not read). The lease is consumed.
}

struct PutResult {
  info @0 :SegmentInfo;
}

struct GetSegment {
  key @0 :Key128;
  kind @1 :KeyKind;
}

# Frame 1 holds the payload, described by tensors[0].
struct GetResult {
  info @0 :SegmentInfo;
  tokenIds @1 :List(Int32);
  positions @2 :List(Int32);
  prefixHash @3 :Key128;
  tensors @4 :List(TensorDesc);
}

struct LookupKey {
  key @0 :Key128;
  kind @1 :KeyKind;
}

struct Lookup {
  keys @0 :List(LookupKey);
}

struct LookupEntry {
  found @0 :Bool;
  tier @1 :Tier;
  contextKey @2 :Key128;
  tokens @3 :UInt32;
  payloadBytes @4 :UInt64;
}

struct LookupResult {
  entries @0 :List(LookupEntry);   # one per requested key, same order
}

struct DeleteSegment {
  key @0 :Key128;                  # context key
}

struct ListSegments {
  startAfter @0 :Key128;           # context key the previous page ended at
  hasStartAfter @1 :Bool;
  limit @2 :UInt32;                # 1..1000
}

struct ListResult {
  segments @0 :List(SegmentInfo);
  hasMore @1 :Bool;
}

struct TierStats {
  tier @0 :Tier;
  segments @1 :UInt64;
  bytes @2 :UInt64;
  capacityBytes @3 :UInt64;        # 0: unlimited
  hits @4 :UInt64;
  misses @5 :UInt64;
}

struct ErrorCount {
  code @0 :ErrorCode;
  count @1 :UInt64;
}

struct StatsResult {
  tiers @0 :List(TierStats);
  puts @1 :UInt64;
  gets @2 :UInt64;
  promotions @3 :UInt64;
  demotions @4 :UInt64;
  evictions @5 :UInt64;
  corruptRecords @6 :UInt64;
  bytesIn @7 :UInt64;
  bytesOut @8 :UInt64;
  errors @9 :List(ErrorCount);
  uptimeSeconds @10 :Float64;
  requests @11 :UInt64;
  sessions @12 :UInt64;
  reuse @13 :List(ReuseCounter);   # KVCOMM reuse, per namespace, agent and placeholder slot
}

# ---- KVCOMM reuse (../shared/KVCOMM.md) ----
#
# An agent's prompt is sent as segments, all its tokens in order from position 0: template
# segments (the agent's own text) and placeholders (content shared between agents: the input,
# documents, other agents' messages), each placeholder named by its slot. Per segment kvcommd
# answers EXACT (stored with the very same preceding tokens), REALIGNED (assembled from the
# placeholder's base KV and the slot's anchors) or PREFILL (the agent computes it; with
# reportActual it then sends ReportActual so the placeholder becomes an anchor).
# base(P) of a placeholder is the segment stored for its tokens right after `basePrefix`
# (e.g. [BOS]); agents store it before planning.

enum SegmentRole {
  template @0;
  placeholder @1;
}

enum ReuseDecision {
  exact @0;
  realigned @1;
  prefill @2;
}

# What kvcommd needs to know about the model to realign: its KV geometry (tokens ignored; dtype
# is the one wanted back), its RoPE inverse frequencies (headDim / 2 of them), and the tokens
# bases are computed after.
struct ReuseModel {
  shape @0 :KvShape;
  ropeInvFreq @1 :List(Float32);
  basePrefix @2 :List(Int32);
}

struct PlanSegment {
  role @0 :SegmentRole;
  slot @1 :Text;                   # placeholders only
  tokenIds @2 :List(Int32);
}

# How a plan's KV reaches the agent.
enum KvDelivery {
  frames @0;      # payload frames of the reply
  deviceIpc @1;   # leases of kvcommd's GPU arena, read in place through CUDA IPC: for workers on
                  # the daemon's GPU; bf16 KV only; the agent releases each lease when it has
                  # copied the KV (ReleaseLeases), or it expires
}

struct PlanPrompt {
  agent @0 :Text;                  # deltas are recorded per agent (template + role)
  model @1 :ReuseModel;
  segments @2 :List(PlanSegment);
  delivery @3 :KvDelivery;
}

# A block of the arena holding one segment's KV, in the segment layout.
struct DeviceLease {
  id @0 :UInt64;
  offset @1 :UInt64;               # bytes from the arena's start
  bytes @2 :UInt64;
}

struct DeviceArena {
  ipcHandle @0 :Data;              # cudaIpcMemHandle_t of the whole arena
  arenaId @1 :UInt64;              # another id: another arena (kvcommd restarted), map it again
  deviceUuid @2 :Text;             # hex UUID of kvcommd's GPU; only a worker on it can map it
  bytes @3 :UInt64;                # the arena's size
}

struct SegmentPlan {
  decision @0 :ReuseDecision;
  reportActual @1 :Bool;
  tensorIndex @2 :Int32;           # frames: the frame holding its KV (exact, realigned), -1 if none
  lease @3 :DeviceLease;           # deviceIpc: where its KV is (exact, realigned)
}

# Frames 1..n hold the KV of the exact and realigned segments, described by `tensors`.
struct PlanResult {
  segments @0 :List(SegmentPlan);
  tensors @1 :List(TensorDesc);
  arena @2 :DeviceArena;           # deviceIpc
  checkReuse @3 :Bool;             # compute this turn in full too and send ReportCheck
}

struct ReleaseLeases {
  ids @0 :List(UInt64);
}

# A lease of `bytes` in kvcommd's IPC arena for the worker to write a segment into, then to
# PutSegment with `lease` set: KV put from the daemon's GPU never crosses the host socket.
struct ReserveLease {
  bytes @0 :UInt64;
}

struct LeaseReserved {
  lease @0 :DeviceLease;
  arena @1 :DeviceArena;
}

# The actual KV of a placeholder the plan asked about (frame 1) and of the template segment
# right after it (frame 2, absent when followingTokens is empty), or both in a lease, from a
# prefill in the agent's prompt. Keys rotated at their positions there.
# `offered`: sent unasked, by an agent that computed new content before kvcommd held its base
# (its plan could not ask); kvcommd keeps it if the content is an anchor or, by the pool's rule,
# becomes one, and otherwise drops it (still a success).
struct ReportActual {
  agent @0 :Text;
  slot @1 :Text;
  model @2 :ReuseModel;
  placeholderTokens @3 :List(Int32);
  placeholderPosition @4 :Int32;
  followingTokens @5 :List(Int32);
  followingPosition @6 :Int32;
  tensors @7 :List(TensorDesc);
  offered @8 :Bool;
  # Non-zero: the KV is in this lease of kvcommd's arena (ReserveLease), the placeholder's and
  # then the following segment's back to back as `tensors` describe them, instead of in
  # frames; kvcommd releases it.
  lease @9 :UInt64;
}

# Asked before an offered ReportActual, so that KV kvcommd would drop never crosses the socket:
# answered true when the content (its base stored) is an anchor of the slot or, by the pool's
# rule, is made one now; the offered report then brings its deltas.
struct OfferAnchor {
  agent @0 :Text;
  slot @1 :Text;
  model @2 :ReuseModel;
  placeholderTokens @3 :List(Int32);
}

# The outcome of a check a plan asked for (PlanResult.checkReuse): the slots whose realigned
# KV the turn used, whether its reply differed from the one of a full prefill, and the first
# reply token's KL(full || reuse) in nats. A slot whose estimates change an agent's replies
# too often stops being estimated for that agent (kvcommd's [checks] settings).
struct ReportCheck {
  agent @0 :Text;
  slots @1 :List(Text);            # the slots the turn estimated
  replyChanged @2 :Bool;
  nextTokenKl @3 :Float64;
  # Of `slots`, those whose estimate alone changed the reply (the agent tried each alone); empty
  # when the reply did not change, or when no slot changes it alone (then all share the change).
  # Slots named alike but for a final ".N" index ("message.0", "message.1") are one family, whose
  # tally for the agent gates them all.
  blamedSlots @4 :List(Text);
}

struct AnchorEntry {
  baseKey @0 :Key128;
  tokens @1 :UInt32;
  activations @2 :UInt64;
  agents @3 :List(Text);           # agents whose deltas it holds
}

struct AnchorSlotListing {
  slot @0 :Text;
  anchors @1 :List(AnchorEntry);   # oldest first
}

struct AnchorListing {
  slots @0 :List(AnchorSlotListing);
}

struct ReuseCounter {
  namespace @0 :Text;
  agent @1 :Text;
  slot @2 :Text;                   # "" for template segments
  tokensRequested @3 :UInt64;
  tokensExact @4 :UInt64;
  tokensRealigned @5 :UInt64;
  tokensPrefill @6 :UInt64;
  anchorsCreated @7 :UInt64;
  anchorsEvicted @8 :UInt64;
  bytesMoved @9 :UInt64;
  realignSeconds @10 :Float64;
  planSeconds @11 :Float64;        # answering PlanPrompt (template counter only)
  checks @12 :UInt64;              # ReportCheck outcomes for this slot
  checksChanged @13 :UInt64;       # of those, the reply changed
  tokensGated @14 :UInt64;         # prefilled: checks stopped this slot's estimates for the agent
}

# ---- Compressed hand-out (kvstore/compress) ----
#
# A stored segment compressed to a budget: `method` with its parameters ("snapkv:window=32"),
# `budget` ("128" tokens per layer and head, "25%", "64KiB", "" for quantizers) and `allocator`
# ("uniform", "pyramid:beta=20", "cake:heads=ada") as kvstore/compress/spec.h parses them.
# Query-aware methods need the observation window's queries after RoPE: frame 1, described as
# tensor "queries", f32, shape [layers, qHeads, window, headDim]. Methods that un-rotate keys
# (leverage, compactor) need the RoPE inverse frequencies; the segment's positions must then be
# contiguous. Kept rows are stored in `rowDtype`.
enum CompressedCodec {
  tokenSubset @0;   # "KVTS": kept indices and K / V rows per (layer, kv head)
  kivi @1;          # "KVKV": every token, quantized but a full-precision recent window
  mixed @2;         # "KVMX": kept tokens in rowDtype, the others quantized per token (MiKV)
  gear @3;          # "KVGR": quantized + low-rank residual + exact outliers
  miniCache @4;     # "KVMC": adjacent deep layers share per-token directions
}

struct GetCompressed {
  key @0 :Key128;
  kind @1 :KeyKind;
  method @2 :Text;
  budget @3 :Text;
  allocator @4 :Text;
  rowDtype @5 :DType;
  qHeads @6 :UInt32;
  window @7 :UInt32;
  ropeInvFreq @8 :List(Float32);
  tensors @9 :List(TensorDesc);    # empty, or the queries
  headScores @10 :List(Float32);   # duo: calibrated score per (layer, kv head)
  queriesFollow @11 :Bool;         # laq: the queries are of a draft after the segment
}

# Frame 1: the encoded segment (tensor "compressed"; its codec's header repeats the shape).
struct CompressedResult {
  info @0 :SegmentInfo;            # the segment it was made from
  codec @1 :CompressedCodec;
  kept @2 :List(UInt32);           # tokenSubset: tokens kept per (layer, kv head)
  tensors @3 :List(TensorDesc);
}

struct Request {
  id @0 :UInt64;
  union {
    hello @1 :Hello;
    put @2 :PutSegment;
    get @3 :GetSegment;
    lookup @4 :Lookup;
    delete @5 :DeleteSegment;
    list @6 :ListSegments;
    stats @7 :Void;
    ping @8 :Void;
    planPrompt @9 :PlanPrompt;
    reportActual @10 :ReportActual;
    listAnchors @11 :Void;
    getCompressed @12 :GetCompressed;
    releaseLeases @13 :ReleaseLeases;
    reserveLease @14 :ReserveLease;
    reportCheck @15 :ReportCheck;
    offerAnchor @16 :OfferAnchor;
  }
}

struct Reply {
  id @0 :UInt64;
  union {
    error @1 :Error;
    hello @2 :HelloResult;
    put @3 :PutResult;
    get @4 :GetResult;
    lookup @5 :LookupResult;
    delete @6 :Void;
    list @7 :ListResult;
    stats @8 :StatsResult;
    pong @9 :Void;
    plan @10 :PlanResult;
    reportActual @11 :Void;
    anchors @12 :AnchorListing;
    compressed @13 :CompressedResult;
    releaseLeases @14 :UInt32;     # how many of the ids were held (the others had expired)
    leaseReserved @15 :LeaseReserved;
    reportCheck @16 :Void;
    offerAnchor @17 :Bool;         # wanted: send the offered ReportActual
  }
}
