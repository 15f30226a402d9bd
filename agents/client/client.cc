#include "agents/client/client.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <functional>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "agents/client/internal/call.h"
#include "agents/client/internal/mapped_arena.h"
#include "common/endpoint.h"
#include "schemas/kvcomm.capnp.h"
#include "schemas/wire.h"

namespace kvcomm::client {
namespace {

using internal::Guarded;
using internal::Response;
using internal::Roundtrip;
using internal::Unexpected;

using Clock = std::chrono::steady_clock;

SegmentInfo ReadInfo(proto::SegmentInfo::Reader in) {
  SegmentInfo out;
  out.context_key = wire::ReadKey(in.getContextKey());
  out.content_key = wire::ReadKey(in.getContentKey());
  out.fingerprint = wire::ReadKey(in.getFingerprint());
  out.name_space = in.getNamespace().cStr();
  auto shape = in.getShape();
  out.layout = {shape.getNumLayers(), shape.getKvHeads(), shape.getTokens(), shape.getHeadDim(),
                static_cast<DType>(shape.getDtype())};
  out.payload_bytes = in.getPayloadBytes();
  out.checksum = in.getChecksum();
  out.first_position = in.getFirstPosition();
  out.created_unix_ms = in.getCreatedUnixMs();
  out.last_access_unix_ms = in.getLastAccessUnixMs();
  out.access_count = in.getAccessCount();
  out.tier = static_cast<Tier>(in.getTier());
  out.has_token_ids = in.getHasTokenIds();
  return out;
}

}  // namespace

std::string_view TierName(Tier tier) {
  switch (tier) {
    case Tier::kNone:
      return "none";
    case Tier::kGpu:
      return "gpu";
    case Tier::kHost:
      return "host";
    case Tier::kDisk:
      return "disk";
  }
  return "?";
}

namespace internal {

// One DEALER socket and the request ids sent on it.
class Transport {
 public:
  explicit Transport(std::string endpoint)
      : endpoint_(std::move(endpoint)), context_(1), socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::immediate, 1);  // queue only on a live connection
    socket_.connect(endpoint_);
  }

  Result<Response> Call(capnp::MallocMessageBuilder& message, std::vector<zmq::message_t> payloads,
                        std::chrono::milliseconds timeout) {
    const uint64_t id = next_id_++;
    message.getRoot<proto::Request>().setId(id);
    std::vector<zmq::message_t> frames;
    frames.push_back(wire::ToFrame(message));
    for (auto& p : payloads) frames.push_back(std::move(p));

    const auto deadline = Clock::now() + timeout;
    if (!WaitFor(ZMQ_POLLOUT, deadline) ||
        !zmq::send_multipart(socket_, frames, zmq::send_flags::dontwait)) {
      return Error(ErrorCode::kUnavailable,
                   "kvcommd at {} is not reachable (no connection within {} ms)", endpoint_,
                   timeout.count());
    }
    while (true) {
      if (!WaitFor(ZMQ_POLLIN, deadline)) {
        return Error(ErrorCode::kDeadlineExceeded, "no reply from kvcommd at {} within {} ms",
                     endpoint_, timeout.count());
      }
      Response response;
      if (!zmq::recv_multipart(socket_, std::back_inserter(response.frames),
                               zmq::recv_flags::dontwait) ||
          response.frames.empty()) {
        continue;
      }
      response.aligned = std::make_unique<wire::AlignedFrame>(response.frames[0]);
      if (!response.aligned->status().ok()) return response.aligned->status();
      auto replied_id = Guarded([&]() -> Result<uint64_t> {
        response.reader = std::make_unique<capnp::FlatArrayMessageReader>(
            response.aligned->words(), wire::ReaderLimits(response.frames[0].size()));
        return response.reply().getId();
      });
      if (!replied_id.ok()) return replied_id.status();
      if (*replied_id == id) return response;
      // A late reply to an earlier call that timed out: drop it and keep waiting.
    }
  }

 private:
  bool WaitFor(short events, Clock::time_point deadline) {
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() < 0) left = std::chrono::milliseconds(0);
      zmq::pollitem_t item{socket_.handle(), 0, events, 0};
      zmq::poll(&item, 1, left);
      if (item.revents & events) return true;
      if (left.count() == 0) return false;
    }
  }

  std::string endpoint_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  uint64_t next_id_ = 1;
};

}  // namespace internal

namespace internal {

Result<Response> Roundtrip(Transport& transport, const Filler& fill,
                           std::chrono::milliseconds timeout,
                           const std::function<Status()>& rehello) {
  for (int attempt = 0;; ++attempt) {
    capnp::MallocMessageBuilder message;
    auto payloads = fill(message.initRoot<proto::Request>());
    KVCOMM_ASSIGN_OR_RETURN(Response response,
                            transport.Call(message, std::move(payloads), timeout));
    Status daemon_error;
    KVCOMM_RETURN_IF_ERROR(Guarded([&]() -> Status {
      auto reply = response.reply();
      if (reply.isError()) {
        daemon_error = Status(static_cast<ErrorCode>(reply.getError().getCode()),
                              reply.getError().getMessage().cStr());
      }
      return Status::Ok();
    }));
    if (daemon_error.ok()) return response;
    if (rehello && attempt == 0 && daemon_error.code() == ErrorCode::kFailedPrecondition) {
      KVCOMM_RETURN_IF_ERROR(rehello());
      continue;
    }
    return daemon_error;
  }
}

Status Unexpected(std::string_view call) {
  return Error(ErrorCode::kMalformedMessage, "kvcommd answered {} with the wrong reply type", call);
}

}  // namespace internal

Client::Client(ClientOptions options) : options_(std::move(options)) {
  if (options_.endpoint.empty()) options_.endpoint = DefaultEndpoint();
  transport_ = std::make_unique<internal::Transport>(options_.endpoint);
}

Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  KVCOMM_RETURN_IF_ERROR(ValidateNamespace(options.name_space));
  std::unique_ptr<Client> client;
  try {
    client.reset(new Client(std::move(options)));
  } catch (const zmq::error_t& e) {
    return Error(ErrorCode::kInvalidArgument, "cannot connect to '{}': {}", options.endpoint,
                 e.what());
  }
  KVCOMM_RETURN_IF_ERROR(client->Hello());
  return client;
}

Status Client::Hello() {
  KVCOMM_ASSIGN_OR_RETURN(Response response,
                          Roundtrip(
                              *transport_,
                              [&](proto::Request::Builder request) {
                                auto hello = request.initHello();
                                hello.setClientName(options_.client_name);
                                hello.setProtocolVersion(proto::PROTOCOL_VERSION);
                                hello.setNamespace(options_.name_space);
                                wire::WriteKey(hello.initFingerprint(),
                                               options_.model.value_or(Hash128{}));
                                return std::vector<zmq::message_t>{};
                              },
                              options_.timeout, nullptr));
  return Guarded(
      [&]() -> Status { return response.reply().isHello() ? Status::Ok() : Unexpected("Hello"); });
}

Status Client::Ping() {
  KVCOMM_CALL(response, [](proto::Request::Builder request) {
    request.setPing();
    return std::vector<zmq::message_t>{};
  });
  return response.reply().isPong() ? Status::Ok() : Unexpected("Ping");
}

Status Client::CheckPut(const PutRequest& put) const {
  KVCOMM_RETURN_IF_ERROR(put.layout.Validate());
  for (const auto* list : {&put.token_ids, &put.positions}) {
    if (!list->empty() && list->size() != put.layout.tokens) {
      return InvalidArgument("token list has {} entries, the segment has {} tokens", list->size(),
                             put.layout.tokens);
    }
  }
  return Status::Ok();
}

Result<SegmentInfo> Client::Put(const PutRequest& put) {
  KVCOMM_RETURN_IF_ERROR(CheckPut(put));
  if (put.payload.size() != put.layout.PayloadBytes()) {
    return InvalidArgument("payload has {} bytes, layout {} needs {}", put.payload.size(),
                           put.layout.ToString(), put.layout.PayloadBytes());
  }
  return SendPut(put, put.payload, 0);
}

Result<SegmentInfo> Client::SendPut(const PutRequest& put, const Blob& payload, uint64_t lease) {
  const uint64_t checksum = lease != 0 ? 0 : Checksum64(payload.span());
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initPut();
    wire::WriteShape(out.initShape(), put.layout);
    out.setCodec(proto::Codec::RAW);
    auto ids = out.initTokenIds(static_cast<unsigned>(put.token_ids.size()));
    for (unsigned i = 0; i < ids.size(); ++i) ids.set(i, put.token_ids[i]);
    auto positions = out.initPositions(static_cast<unsigned>(put.positions.size()));
    for (unsigned i = 0; i < positions.size(); ++i) positions.set(i, put.positions[i]);
    out.setFirstPosition(put.first_position);
    wire::WriteKey(out.initPrefixHash(), put.prefix_hash);
    wire::DescribeKvTensor(out.initTensors(1)[0], put.layout, checksum);
    out.setLease(lease);
    std::vector<zmq::message_t> frames;
    if (lease == 0) frames.push_back(wire::BlobFrame(payload));
    return frames;
  });
  return Guarded([&]() -> Result<SegmentInfo> {
    if (!response.reply().isPut()) return Unexpected("PutSegment");
    return ReadInfo(response.reply().getPut().getInfo());
  });
}

Result<SegmentData> Client::Get(const SegmentKey& key, KeyKind kind) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto get = request.initGet();
    wire::WriteKey(get.initKey(), key);
    get.setKind(static_cast<proto::KeyKind>(kind));
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<SegmentData> {
    if (!response.reply().isGet()) return Unexpected("GetSegment");
    auto get = response.reply().getGet();
    SegmentData data;
    data.info = ReadInfo(get.getInfo());
    KVCOMM_ASSIGN_OR_RETURN(data.info.layout, wire::ReadShape(get.getInfo().getShape()));
    if (get.getTensors().size() != 1 || response.frames.size() != 2) {
      return Error(ErrorCode::kMalformedMessage,
                   "GetSegment reply has {} tensors and {} payload frames", get.getTensors().size(),
                   response.frames.size() - 1);
    }
    std::span<const std::byte> bytes(static_cast<const std::byte*>(response.frames[1].data()),
                                     response.frames[1].size());
    KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensor(get.getTensors()[0], data.info.layout, bytes));
    KVCOMM_ASSIGN_OR_RETURN(
        data.token_ids,
        wire::ReadTokenList(get.getTokenIds(), data.info.layout.tokens, "tokenIds"));
    KVCOMM_ASSIGN_OR_RETURN(
        data.positions,
        wire::ReadTokenList(get.getPositions(), data.info.layout.tokens, "positions"));
    data.prefix_hash = wire::ReadKey(get.getPrefixHash());
    data.payload = wire::FrameToBlob(std::move(response.frames[1]));
    return data;
  });
}

Result<std::vector<LookupEntry>> Client::Lookup(
    const std::vector<std::pair<SegmentKey, KeyKind>>& keys) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto list = request.initLookup().initKeys(static_cast<unsigned>(keys.size()));
    for (unsigned i = 0; i < keys.size(); ++i) {
      wire::WriteKey(list[i].initKey(), keys[i].first);
      list[i].setKind(static_cast<proto::KeyKind>(keys[i].second));
    }
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<std::vector<LookupEntry>> {
    if (!response.reply().isLookup()) return Unexpected("Lookup");
    auto entries = response.reply().getLookup().getEntries();
    if (entries.size() != keys.size()) {
      return Error(ErrorCode::kMalformedMessage, "Lookup of {} keys answered with {} entries",
                   keys.size(), entries.size());
    }
    std::vector<LookupEntry> out;
    for (auto e : entries) {
      out.push_back({e.getFound(), static_cast<Tier>(e.getTier()), wire::ReadKey(e.getContextKey()),
                     e.getTokens(), e.getPayloadBytes()});
    }
    return out;
  });
}

Status Client::Remove(const SegmentKey& context_key) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    wire::WriteKey(request.initDelete().initKey(), context_key);
    return std::vector<zmq::message_t>{};
  });
  return response.reply().isDelete() ? Status::Ok() : Unexpected("DeleteSegment");
}

Result<ListPage> Client::List(std::optional<SegmentKey> start_after, uint32_t limit) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto list = request.initList();
    list.setHasStartAfter(start_after.has_value());
    if (start_after) wire::WriteKey(list.initStartAfter(), *start_after);
    list.setLimit(limit);
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<ListPage> {
    if (!response.reply().isList()) return Unexpected("ListSegments");
    ListPage page;
    page.has_more = response.reply().getList().getHasMore();
    for (auto info : response.reply().getList().getSegments())
      page.segments.push_back(ReadInfo(info));
    return page;
  });
}

Result<DaemonStats> Client::Stats() {
  KVCOMM_CALL(response, [](proto::Request::Builder request) {
    request.setStats();
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<DaemonStats> {
    if (!response.reply().isStats()) return Unexpected("Stats");
    auto in = response.reply().getStats();
    DaemonStats out;
    for (auto t : in.getTiers()) {
      out.tiers.push_back({static_cast<Tier>(t.getTier()), t.getSegments(), t.getBytes(),
                           t.getCapacityBytes(), t.getHits(), t.getMisses()});
    }
    out.puts = in.getPuts();
    out.gets = in.getGets();
    out.promotions = in.getPromotions();
    out.demotions = in.getDemotions();
    out.evictions = in.getEvictions();
    out.corrupt_records = in.getCorruptRecords();
    out.bytes_in = in.getBytesIn();
    out.bytes_out = in.getBytesOut();
    out.requests = in.getRequests();
    out.sessions = in.getSessions();
    out.uptime_seconds = in.getUptimeSeconds();
    for (auto e : in.getErrors())
      out.errors.emplace_back(static_cast<ErrorCode>(e.getCode()), e.getCount());
    for (auto r : in.getReuse()) {
      out.reuse.push_back({r.getNamespace().cStr(), r.getAgent().cStr(), r.getSlot().cStr(),
                           r.getTokensRequested(), r.getTokensExact(), r.getTokensRealigned(),
                           r.getTokensPrefill(), r.getAnchorsCreated(), r.getAnchorsEvicted(),
                           r.getBytesMoved(), r.getRealignSeconds(), r.getPlanSeconds(),
                           r.getChecks(), r.getChecksChanged(), r.getTokensGated()});
    }
    return out;
  });
}

Result<CompressedSegment> Client::GetCompressed(const CompressedFetch& fetch) {
  const uint64_t per_layer = uint64_t{fetch.q_heads} * fetch.window * fetch.head_dim;
  if (!fetch.queries.empty() && (per_layer == 0 || fetch.queries.size() % per_layer != 0))
    return InvalidArgument(
        "{} query values are not layers x q_heads ({}) x window ({}) x head_dim ({})",
        fetch.queries.size(), fetch.q_heads, fetch.window, fetch.head_dim);
  // The daemon checks the shape against the segment's layers and head_dim.
  std::vector<uint64_t> query_shape;
  if (per_layer > 0)
    query_shape = std::vector<uint64_t>{fetch.queries.size() / per_layer, fetch.q_heads,
                                        fetch.window, fetch.head_dim};
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initGetCompressed();
    wire::WriteKey(out.initKey(), fetch.key);
    out.setKind(static_cast<proto::KeyKind>(fetch.kind));
    out.setMethod(fetch.method);
    out.setBudget(fetch.budget);
    out.setAllocator(fetch.allocator);
    out.setRowDtype(static_cast<proto::DType>(fetch.row_dtype));
    out.setQHeads(fetch.q_heads);
    out.setWindow(fetch.window);
    out.setQueriesFollow(fetch.queries_follow);
    auto rope = out.initRopeInvFreq(static_cast<unsigned>(fetch.rope_inv_freq.size()));
    for (unsigned i = 0; i < rope.size(); ++i) rope.set(i, fetch.rope_inv_freq[i]);
    auto scores = out.initHeadScores(static_cast<unsigned>(fetch.head_scores.size()));
    for (unsigned i = 0; i < scores.size(); ++i) scores.set(i, fetch.head_scores[i]);
    std::vector<zmq::message_t> payload;
    if (!fetch.queries.empty()) {
      std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(fetch.queries.data()),
                                       fetch.queries.size() * sizeof(float));
      wire::DescribeTensor(out.initTensors(1)[0], "queries", DType::kF32, query_shape, bytes);
      payload.emplace_back(bytes.data(), bytes.size());
    }
    return payload;
  });
  return Guarded([&]() -> Result<CompressedSegment> {
    if (!response.reply().isCompressed()) return Unexpected("GetCompressed");
    auto result = response.reply().getCompressed();
    CompressedSegment out;
    out.info = ReadInfo(result.getInfo());
    KVCOMM_ASSIGN_OR_RETURN(out.info.layout, wire::ReadShape(result.getInfo().getShape()));
    const auto codec = static_cast<uint16_t>(result.getCodec());
    if (codec > static_cast<uint16_t>(CompressedCodec::kMiniCache))
      return Error(ErrorCode::kMalformedMessage, "GetCompressed reply names codec {}", codec);
    out.codec = static_cast<CompressedCodec>(codec);
    for (uint32_t k : result.getKept()) out.kept.push_back(k);
    if (result.getTensors().size() != 1 || response.frames.size() != 2)
      return Error(ErrorCode::kMalformedMessage,
                   "GetCompressed reply has {} tensors and {} payload frames",
                   result.getTensors().size(), response.frames.size() - 1);
    std::span<const std::byte> bytes(static_cast<const std::byte*>(response.frames[1].data()),
                                     response.frames[1].size());
    KVCOMM_RETURN_IF_ERROR(wire::CheckBytes(result.getTensors()[0], "compressed", bytes));
    out.bytes = wire::FrameToBlob(std::move(response.frames[1]));
    return out;
  });
}

}  // namespace kvcomm::client
