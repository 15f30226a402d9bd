#include "daemon/request_handler.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>

#include "daemon/internal/compress_wire.h"
#include "daemon/internal/convert.h"
#include "daemon/internal/reuse_wire.h"
#include "kernels/device.h"
#include "schemas/kvcomm.capnp.h"
#include "schemas/wire.h"

namespace kvcomm::daemon {
namespace {

using internal::FillSegmentInfo;
using internal::FillStats;
using internal::ReadKeyKind;
using proto::Reply;
using proto::Request;
using wire::ReadKey;
using wire::WriteKey;

constexpr uint32_t kMaxLookupKeys = 10000;
constexpr uint32_t kMaxListLimit = 1000;
constexpr size_t kMaxClientNameBytes = 256;

// Everything one request handler needs; built once per request.
struct Call {
  std::string_view routing_id;
  std::vector<zmq::message_t>& frames;  // [0] is the Cap'n Proto frame
  Request::Reader request;
  Reply::Builder reply;
  std::vector<zmq::message_t>& payload_out;
};

Status ExpectPayloadFrames(const Call& call, size_t count, std::string_view request_name) {
  size_t payloads = call.frames.size() - 1;
  if (payloads != count) {
    return InvalidArgument("{} request carries {} payload frames, expected {}", request_name,
                           payloads, count);
  }
  return Status::Ok();
}

}  // namespace

class RequestDispatch {
 public:
  RequestDispatch(kvstore::TieredStore& store, AnchorService& anchors, SessionTable& sessions,
                  DaemonCounters& counters, const ServerConfig& config, LeaseStaging& staging)
      : store_(store),
        anchors_(anchors),
        sessions_(sessions),
        counters_(counters),
        config_(config),
        staging_(staging) {}

  Status Dispatch(Call& call) {
    switch (call.request.which()) {
      case Request::HELLO:
        return Hello(call);
      case Request::PING:
        KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "Ping"));
        call.reply.setPong();
        return Status::Ok();
      case Request::STATS:
        KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "Stats"));
        return Stats(call);
      case Request::PUT:
        return Put(call);
      case Request::GET:
        return Get(call);
      case Request::LOOKUP:
        return Lookup(call);
      case Request::DELETE:
        return Delete(call);
      case Request::LIST:
        return List(call);
      case Request::PLAN_PROMPT:
        return PlanPrompt(call);
      case Request::REPORT_ACTUAL:
        return ReportActual(call);
      case Request::LIST_ANCHORS:
        return ListAnchors(call);
      case Request::GET_COMPRESSED:
        return GetCompressed(call);
      case Request::RELEASE_LEASES:
        return ReleaseLeases(call);
      case Request::RESERVE_LEASE:
        return ReserveLease(call);
      case Request::REPORT_CHECK:
        return ReportCheck(call);
      case Request::OFFER_ANCHOR:
        return OfferAnchor(call);
    }
    return InvalidArgument("unknown request type {}", static_cast<int>(call.request.which()));
  }

 private:
  Result<Session> RequireSession(const Call& call) {
    auto session = sessions_.Find(call.routing_id);
    if (!session) {
      return Status(ErrorCode::kFailedPrecondition, "no session: send Hello first");
    }
    return *session;
  }

  static kvstore::Scope ScopeOf(const Session& s) { return {s.name_space, s.model}; }

  Status Hello(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "Hello"));
    auto hello = call.request.getHello();
    if (hello.getProtocolVersion() != proto::PROTOCOL_VERSION) {
      return Error(ErrorCode::kVersionMismatch,
                   "client speaks protocol version {}, kvcommd speaks {}",
                   hello.getProtocolVersion(), proto::PROTOCOL_VERSION);
    }
    Session session;
    session.client_name = std::string(hello.getClientName().cStr(), hello.getClientName().size());
    if (session.client_name.size() > kMaxClientNameBytes) {
      return InvalidArgument("client name has {} bytes, at most {} allowed",
                             session.client_name.size(), kMaxClientNameBytes);
    }
    session.name_space = std::string(hello.getNamespace().cStr(), hello.getNamespace().size());
    KVCOMM_RETURN_IF_ERROR(ValidateNamespace(session.name_space));
    Hash128 fingerprint = ReadKey(hello.getFingerprint());
    if (!fingerprint.IsZero()) session.model = fingerprint;
    spdlog::debug("hello from '{}' namespace '{}' model {}", session.client_name,
                  session.name_space, fingerprint.ToHex());
    sessions_.Upsert(call.routing_id, std::move(session));
    auto result = call.reply.initHello();
    result.setServerName("kvcommd");
    result.setProtocolVersion(proto::PROTOCOL_VERSION);
    result.setMaxRequestBytes(config_.max_request_bytes);
    return Status::Ok();
  }

  Status Put(Call& call) {
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    if (!session.model) {
      return Status(ErrorCode::kPermissionDenied,
                    "this session has no model fingerprint; say Hello with one to write segments");
    }
    auto put = call.request.getPut();
    KVCOMM_ASSIGN_OR_RETURN(KvLayout layout, wire::ReadShape(put.getShape()));
    if (put.getCodec() != proto::Codec::RAW) {
      return InvalidArgument("codec {} is not supported for PutSegment (only raw)",
                             static_cast<int>(put.getCodec()));
    }
    auto tensors = put.getTensors();
    const bool from_lease = put.getLease() != 0;
    if (tensors.size() != 1 || call.frames.size() != (from_lease ? 1u : 2u)) {
      return InvalidArgument(
          "PutSegment needs exactly one tensor 'kv' and {} payload frame{}, got {} "
          "descriptions and {} frames",
          from_lease ? "no" : "one", from_lease ? "s (its payload is in a lease)" : "",
          tensors.size(), call.frames.size() - 1);
    }
    const auto start = std::chrono::steady_clock::now();
    if (from_lease) {
      KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensorShape(tensors[0], layout, layout.PayloadBytes()));
    } else {
      const zmq::message_t& frame = call.frames[1];
      std::span<const std::byte> bytes(static_cast<const std::byte*>(frame.data()), frame.size());
      KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensor(tensors[0], layout, bytes));
    }
    kvstore::SegmentMeta meta;
    meta.fingerprint = *session.model;
    meta.name_space = session.name_space;
    meta.layout = layout;
    meta.payload_bytes = layout.PayloadBytes();
    meta.first_position = put.getFirstPosition();
    meta.prefix_hash = ReadKey(put.getPrefixHash());
    KVCOMM_ASSIGN_OR_RETURN(meta.token_ids,
                            wire::ReadTokenList(put.getTokenIds(), layout.tokens, "tokenIds"));
    KVCOMM_ASSIGN_OR_RETURN(meta.positions,
                            wire::ReadTokenList(put.getPositions(), layout.tokens, "positions"));
    Result<kvstore::SegmentMeta> put_result = Error(ErrorCode::kInternal, "not stored");
    if (from_lease) {
      put_result = PutFromLease(std::move(meta), put.getLease(), ScopeOf(session));
    } else {
      meta.checksum = tensors[0].getChecksum();
      SetKeys(meta);
      // The frame becomes the stored payload without a copy.
      put_result = store_.Put(std::move(meta), wire::FrameToBlob(std::move(call.frames[1])));
    }
    KVCOMM_ASSIGN_OR_RETURN(auto stored, std::move(put_result));
    spdlog::debug(
        "put of {} bytes {}: {:.1f} ms", stored.payload_bytes,
        from_lease ? "from a lease" : "in a frame",
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    auto where =
        store_.Lookup({{stored.context_key, kvstore::KeyKind::kContext}}, ScopeOf(session));
    FillSegmentInfo(call.reply.initPut().initInfo(), stored, where[0].tier);
    return Status::Ok();
  }

  Status Get(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "GetSegment"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    auto get = call.request.getGet();
    KVCOMM_ASSIGN_OR_RETURN(auto kind, ReadKeyKind(get.getKind()));
    KVCOMM_ASSIGN_OR_RETURN(auto segment,
                            store_.Get(ReadKey(get.getKey()), kind, ScopeOf(session)));
    auto where =
        store_.Lookup({{segment.meta.context_key, kvstore::KeyKind::kContext}}, ScopeOf(session));
    auto result = call.reply.initGet();
    FillSegmentInfo(result.initInfo(), segment.meta, where[0].tier);
    auto tokens = result.initTokenIds(static_cast<unsigned>(segment.meta.token_ids.size()));
    for (unsigned i = 0; i < tokens.size(); ++i) tokens.set(i, segment.meta.token_ids[i]);
    auto positions = result.initPositions(static_cast<unsigned>(segment.meta.positions.size()));
    for (unsigned i = 0; i < positions.size(); ++i) positions.set(i, segment.meta.positions[i]);
    WriteKey(result.initPrefixHash(), segment.meta.prefix_hash);
    wire::DescribeKvTensor(result.initTensors(1)[0], segment.meta.layout, segment.meta.checksum);
    call.payload_out.push_back(wire::BlobFrame(segment.payload));
    return Status::Ok();
  }

  Status Lookup(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "Lookup"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    auto keys = call.request.getLookup().getKeys();
    if (keys.size() > kMaxLookupKeys) {
      return InvalidArgument("Lookup of {} keys exceeds the limit of {}", keys.size(),
                             kMaxLookupKeys);
    }
    std::vector<std::pair<SegmentKey, kvstore::KeyKind>> wanted;
    wanted.reserve(keys.size());
    for (auto key : keys) {
      KVCOMM_ASSIGN_OR_RETURN(auto kind, ReadKeyKind(key.getKind()));
      wanted.emplace_back(ReadKey(key.getKey()), kind);
    }
    auto hits = store_.Lookup(wanted, ScopeOf(session));
    auto entries = call.reply.initLookup().initEntries(static_cast<unsigned>(hits.size()));
    for (unsigned i = 0; i < hits.size(); ++i) {
      entries[i].setFound(hits[i].found);
      entries[i].setTier(static_cast<proto::Tier>(hits[i].tier));
      WriteKey(entries[i].initContextKey(), hits[i].context_key);
      entries[i].setTokens(hits[i].tokens);
      entries[i].setPayloadBytes(hits[i].payload_bytes);
    }
    return Status::Ok();
  }

  Status Delete(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "DeleteSegment"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    KVCOMM_RETURN_IF_ERROR(
        store_.Delete(ReadKey(call.request.getDelete().getKey()), ScopeOf(session)));
    call.reply.setDelete();
    return Status::Ok();
  }

  Status List(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "ListSegments"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    auto list = call.request.getList();
    if (list.getLimit() == 0 || list.getLimit() > kMaxListLimit) {
      return InvalidArgument("ListSegments limit must be in 1..{}, got {}", kMaxListLimit,
                             list.getLimit());
    }
    std::optional<SegmentKey> start;
    if (list.getHasStartAfter()) start = ReadKey(list.getStartAfter());
    bool has_more = false;
    auto page = store_.List(ScopeOf(session), start, list.getLimit(), &has_more);
    auto result = call.reply.initList();
    result.setHasMore(has_more);
    auto infos = result.initSegments(static_cast<unsigned>(page.size()));
    for (unsigned i = 0; i < page.size(); ++i)
      FillSegmentInfo(infos[i], page[i].meta, page[i].tier);
    return Status::Ok();
  }

  Status Stats(Call& call) {
    auto stats = call.reply.initStats();
    FillStats(stats, store_.Stats(), counters_, sessions_.size());
    const auto reuse = anchors_.Stats();
    internal::FillReuseCounters(stats.initReuse(static_cast<unsigned>(reuse.size())), reuse);
    return Status::Ok();
  }

  Result<Session> RequireModelSession(const Call& call, std::string_view request_name) {
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    if (!session.model) {
      return Error(ErrorCode::kPermissionDenied,
                   "{} needs a session with a model fingerprint; say Hello with one", request_name);
    }
    return session;
  }

  Status PlanPrompt(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "PlanPrompt"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireModelSession(call, "PlanPrompt"));
    auto request = call.request.getPlanPrompt();
    KVCOMM_ASSIGN_OR_RETURN(auto input, internal::ReadPlanInput(request));
    Delivery delivery;
    switch (request.getDelivery()) {
      case proto::KvDelivery::FRAMES:
        delivery = Delivery::kHost;
        break;
      case proto::KvDelivery::DEVICE_IPC:
        delivery = Delivery::kDevice;
        break;
      default:
        return InvalidArgument("unknown KV delivery {}", static_cast<int>(request.getDelivery()));
    }
    KVCOMM_ASSIGN_OR_RETURN(auto plan, anchors_.Plan(ScopeOf(session), input, delivery));
    internal::FillPlanResult(call.reply.initPlan(), plan,
                             delivery == Delivery::kDevice ? anchors_.leases() : nullptr,
                             call.payload_out);
    return Status::Ok();
  }

  static void SetKeys(kvstore::SegmentMeta& meta) {
    if (meta.token_ids.empty()) {
      meta.context_key = ComputeContextKeyFromPayload(meta.fingerprint, meta.name_space,
                                                      meta.prefix_hash, meta.checksum);
      meta.content_key =
          ComputeContentKeyFromPayload(meta.fingerprint, meta.name_space, meta.checksum);
    } else {
      meta.context_key =
          ComputeContextKey(meta.fingerprint, meta.name_space, meta.prefix_hash, meta.token_ids);
      meta.content_key = ComputeContentKey(meta.fingerprint, meta.name_space, meta.token_ids);
    }
  }

  // Stores a payload a worker wrote into lease `id`: the GPU tier copies it within the GPU; the
  // checksum is computed from one copy into pinned staging memory (also what lower tiers get).
  // The lease is released.
  Result<kvstore::SegmentMeta> PutFromLease(kvstore::SegmentMeta meta, uint64_t id,
                                            const kvstore::Scope& scope) {
    DeviceLeases* leases = anchors_.leases();
    if (leases == nullptr)
      return Error(ErrorCode::kUnavailable, "kvcommd has no lease arena (ipc.arena is 0)");
    KVCOMM_ASSIGN_OR_RETURN(auto lease, leases->Find(id));
    if (lease.bytes != meta.payload_bytes) {
      (void)leases->Release(id);
      return InvalidArgument("lease {} holds {} bytes, layout {} needs {}", id, lease.bytes,
                             meta.layout.ToString(), meta.payload_bytes);
    }
    SegmentKey key;
    std::lock_guard lock(staging_.mutex);
    auto stored = [&]() -> Result<kvstore::SegmentMeta> {
      KVCOMM_ASSIGN_OR_RETURN(std::byte * staging, staging_.buffer.Reserve(lease.bytes));
      const auto copy_start = std::chrono::steady_clock::now();
      KVCOMM_RETURN_IF_ERROR(kernels::CopyDeviceToHost(staging, lease.data, lease.bytes));
      const auto checksum_start = std::chrono::steady_clock::now();
      const std::span<const std::byte> bytes(staging, lease.bytes);
      meta.checksum = Checksum64(bytes);
      SetKeys(meta);
      key = meta.context_key;
      const auto place_start = std::chrono::steady_clock::now();
      auto placed = store_.PutFromDevice(std::move(meta), lease.data, [&]() -> Result<Blob> {
        return Blob::FromVector(std::vector<std::byte>(bytes.begin(), bytes.end()));
      });
      auto ms = [](auto from, auto to) {
        return std::chrono::duration<double, std::milli>(to - from).count();
      };
      const auto end = std::chrono::steady_clock::now();
      spdlog::debug("put from lease {}: copy out {:.1f} ms, checksum {:.1f} ms, placing {:.1f} ms",
                    id, ms(copy_start, checksum_start), ms(checksum_start, place_start),
                    ms(place_start, end));
      return placed;
    }();
    // Released on every path. Expired meanwhile: the arena may have lent its bytes to someone
    // else while they were read, so what was stored from them goes.
    if (!leases->Release(id).ok()) {
      if (stored.ok()) (void)store_.Delete(key, scope);
      return Error(ErrorCode::kDeadlineExceeded,
                   "lease {} expired before its segment was put (raise ipc.lease_ttl_ms)", id);
    }
    return stored;
  }

  Status ReserveLease(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "ReserveLease"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    if (!session.model) {
      return Status(ErrorCode::kPermissionDenied,
                    "this session has no model fingerprint; say Hello with one to write segments");
    }
    DeviceLeases* leases = anchors_.leases();
    if (leases == nullptr)
      return Error(ErrorCode::kUnavailable, "kvcommd has no lease arena (ipc.arena is 0)");
    const uint64_t bytes = call.request.getReserveLease().getBytes();
    if (bytes == 0 || bytes > config_.max_request_bytes)
      return InvalidArgument("ReserveLease of {} bytes: segments have 1..{} bytes", bytes,
                             config_.max_request_bytes);
    KVCOMM_ASSIGN_OR_RETURN(auto lease, leases->Acquire(bytes));
    auto reply = call.reply.initLeaseReserved();
    auto out = reply.initLease();
    out.setId(lease.id);
    out.setOffset(lease.offset);
    out.setBytes(lease.bytes);
    internal::FillArena(reply.initArena(), *leases);
    return Status::Ok();
  }

  Status ReleaseLeases(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "ReleaseLeases"));
    KVCOMM_RETURN_IF_ERROR(RequireSession(call).status());
    DeviceLeases* leases = anchors_.leases();
    if (leases == nullptr)
      return Error(ErrorCode::kUnavailable, "kvcommd has no lease arena (ipc.arena is 0)");
    auto ids = call.request.getReleaseLeases().getIds();
    if (ids.size() > kMaxLookupKeys)
      return InvalidArgument("ReleaseLeases of {} ids, at most {}", ids.size(), kMaxLookupKeys);
    uint32_t released = 0;
    for (uint64_t id : ids) released += leases->Release(id).ok();
    call.reply.setReleaseLeases(released);
    return Status::Ok();
  }

  Status ReportActual(Call& call) {
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireModelSession(call, "ReportActual"));
    auto report = call.request.getReportActual();
    auto input = internal::ReadActualInput(report, call.frames, anchors_.leases());
    if (!input.ok()) {
      // A lease of a report refused before its KV was read is not left held until it expires.
      if (report.getLease() != 0 && anchors_.leases() != nullptr)
        (void)anchors_.leases()->Release(report.getLease());
      return input.status();
    }
    KVCOMM_RETURN_IF_ERROR(anchors_.ReportActual(ScopeOf(session), *input));
    call.reply.setReportActual();
    return Status::Ok();
  }

  Status ReportCheck(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "ReportCheck"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireModelSession(call, "ReportCheck"));
    KVCOMM_ASSIGN_OR_RETURN(auto input, internal::ReadCheckInput(call.request.getReportCheck()));
    KVCOMM_RETURN_IF_ERROR(anchors_.ReportCheck(ScopeOf(session), input));
    call.reply.setReportCheck();
    return Status::Ok();
  }

  Status OfferAnchor(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "OfferAnchor"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireModelSession(call, "OfferAnchor"));
    KVCOMM_ASSIGN_OR_RETURN(auto input, internal::ReadOfferInput(call.request.getOfferAnchor()));
    KVCOMM_ASSIGN_OR_RETURN(const bool wanted, anchors_.OfferAnchor(ScopeOf(session), input));
    call.reply.setOfferAnchor(wanted);
    return Status::Ok();
  }

  Status ListAnchors(Call& call) {
    KVCOMM_RETURN_IF_ERROR(ExpectPayloadFrames(call, 0, "ListAnchors"));
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    internal::FillAnchorListing(call.reply.initAnchors(), anchors_.List(ScopeOf(session)));
    return Status::Ok();
  }

  Status GetCompressed(Call& call) {
    KVCOMM_ASSIGN_OR_RETURN(Session session, RequireSession(call));
    return internal::ServeCompressed(store_, ScopeOf(session), call.request.getGetCompressed(),
                                     call.frames, call.reply.initCompressed(), call.payload_out);
  }

  kvstore::TieredStore& store_;
  AnchorService& anchors_;
  SessionTable& sessions_;
  DaemonCounters& counters_;
  const ServerConfig& config_;
  LeaseStaging& staging_;
};

std::vector<zmq::message_t> RequestHandler::Handle(std::string_view routing_id,
                                                   std::vector<zmq::message_t> frames) {
  uint64_t total = 0;
  for (const auto& f : frames) total += f.size();
  counters_.CountRequest(total);

  uint64_t id = 0;
  Status status;
  std::vector<zmq::message_t> payload_out;
  capnp::MallocMessageBuilder message;
  if (frames.empty()) {
    status = Status(ErrorCode::kMalformedMessage, "request has no frames");
  } else if (total > config_.max_request_bytes) {
    status =
        Error(ErrorCode::kResourceExhausted, "request of {} bytes exceeds max_request_bytes {}",
              total, config_.max_request_bytes);
  } else {
    try {
      wire::AlignedFrame words(frames[0]);
      capnp::FlatArrayMessageReader reader(words.words(), wire::ReaderLimits(frames[0].size()));
      auto request = reader.getRoot<Request>();
      id = request.getId();
      auto reply = message.initRoot<Reply>();
      reply.setId(id);
      Call call{routing_id, frames, request, reply, payload_out};
      status = words.status().ok()
                   ? RequestDispatch(store_, anchors_, sessions_, counters_, config_, staging_)
                         .Dispatch(call)
                   : words.status();
    } catch (const kj::Exception& e) {
      status = Error(ErrorCode::kMalformedMessage, "request is not a valid kvcomm message: {}",
                     e.getDescription().cStr());
    } catch (const std::exception& e) {
      status = Error(ErrorCode::kInternal, "request failed: {}", e.what());
    }
  }

  std::vector<zmq::message_t> out;
  if (status.ok()) {
    out.push_back(wire::ToFrame(message));
    for (auto& p : payload_out) out.push_back(std::move(p));
  } else {
    counters_.CountError(status.code());
    spdlog::debug("request {} failed: {}", id, status.ToString());
    capnp::MallocMessageBuilder error_message;
    auto reply = error_message.initRoot<Reply>();
    reply.setId(id);
    auto error = reply.initError();
    error.setCode(static_cast<proto::ErrorCode>(status.code()));
    error.setMessage(status.message());
    out.push_back(wire::ToFrame(error_message));
  }
  uint64_t bytes_out = 0;
  for (const auto& f : out) bytes_out += f.size();
  counters_.CountBytesOut(bytes_out);
  return out;
}

}  // namespace kvcomm::daemon
