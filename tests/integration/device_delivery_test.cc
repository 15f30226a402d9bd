// Device delivery end to end: kvcommd in its own process (CUDA IPC needs two) with a GPU tier
// and a lease arena; this process plans prompts, maps the arena and reads KV in place.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "agents/client/client.h"
#include "common/dtype.h"
#include "common/keys.h"
#include "kernels/device.h"

extern char** environ;

namespace kvcomm {
namespace {

constexpr uint32_t kLayers = 2, kHeads = 2, kDim = 16;

class DeviceDeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU";
    dir_ = std::filesystem::temp_directory_path() / ("kvcomm_ipc_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    endpoint_ = "ipc://" + (dir_ / "kvcommd.sock").string();
    std::vector<std::string> args = {KVCOMMD_BIN,      "--endpoint", endpoint_,     "--no-persist",
                                     "--gpu-capacity", "64MiB",      "--ipc-arena", "16MiB",
                                     "--log-level",    "warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&daemon_, KVCOMMD_BIN, nullptr, nullptr, argv.data(), environ), 0);
    client::ClientOptions options{endpoint_, "device-delivery-test", "test", Hash128{3, 4},
                                  std::chrono::milliseconds(2000)};
    for (int attempt = 0; attempt < 50 && !client_; ++attempt) {
      auto connected = client::Client::Connect(options);
      if (connected.ok()) {
        client_ = std::move(connected).value();
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    ASSERT_TRUE(client_) << "kvcommd did not come up at " << endpoint_;
  }

  void TearDown() override {
    client_.reset();
    if (daemon_ > 0) {
      kill(daemon_, SIGTERM);
      int status = 0;
      waitpid(daemon_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "kvcommd exit " << status;
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  client::PutRequest RandomSegment(const std::vector<int32_t>& tokens, DType dtype) {
    client::PutRequest put;
    put.layout = {kLayers, kHeads, static_cast<uint32_t>(tokens.size()), kDim, dtype};
    std::vector<std::byte> bytes(put.layout.PayloadBytes());
    std::mt19937 rng(static_cast<uint32_t>(tokens.front()));
    for (auto& b : bytes) b = static_cast<std::byte>(rng() & 0x3f);  // finite bf16 values
    put.payload = Blob::FromVector(std::move(bytes));
    put.token_ids = tokens;
    return put;
  }

  client::PlanRequest Plan(const std::vector<int32_t>& tokens, client::Delivery delivery) {
    client::PlanRequest plan{
        "agent",
        {{kLayers, kHeads, 0, kDim, DType::kBF16}, std::vector<float>(kDim / 2, 0.01f), {1}},
        {},
        delivery};
    plan.segments.push_back({false, "", tokens});
    plan.segments.push_back({false, "", {900, 901}});
    return plan;
  }

  std::filesystem::path dir_;
  std::string endpoint_;
  pid_t daemon_ = 0;
  std::unique_ptr<client::Client> client_;
};

TEST_F(DeviceDeliveryTest, ExactKvIsReadInPlaceAndLeasesGoBack) {
  const std::vector<int32_t> tokens = {5, 6, 7, 8, 9};
  const auto put = RandomSegment(tokens, DType::kBF16);
  ASSERT_TRUE(client_->Put(put).ok());

  auto by_frames = client_->PlanPrompt(Plan(tokens, client::Delivery::kFrames));
  ASSERT_TRUE(by_frames.ok()) << by_frames.status().ToString();
  auto in_place = client_->PlanPrompt(Plan(tokens, client::Delivery::kDeviceIpc));
  ASSERT_TRUE(in_place.ok()) << in_place.status().ToString();
  ASSERT_EQ(in_place->segments[0].decision, client::ReuseDecision::kExact);
  EXPECT_EQ(in_place->segments[1].decision, client::ReuseDecision::kPrefill);
  EXPECT_EQ(in_place->segments[1].lease_id, 0u);
  const auto& exact = in_place->segments[0];
  ASSERT_NE(exact.device, nullptr);
  ASSERT_TRUE(kernels::IsDeviceMemory(exact.device));
  std::vector<std::byte> back(exact.layout.PayloadBytes());
  ASSERT_TRUE(kernels::CopyDeviceToHost(back.data(), exact.device, back.size()).ok());
  EXPECT_EQ(back, std::vector<std::byte>(put.payload.data(), put.payload.data() + back.size()));
  EXPECT_EQ(std::memcmp(by_frames->segments[0].payload.data(), back.data(), back.size()), 0);

  // A second plan maps nothing new; every lease is released once.
  auto again = client_->PlanPrompt(Plan(tokens, client::Delivery::kDeviceIpc));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_NE(again->segments[0].lease_id, exact.lease_id);
  auto released = client_->ReleaseLeases({exact.lease_id, again->segments[0].lease_id});
  ASSERT_TRUE(released.ok()) << released.status().ToString();
  EXPECT_EQ(*released, 2u);
  EXPECT_EQ(*client_->ReleaseLeases({exact.lease_id}), 0u);
}

TEST_F(DeviceDeliveryTest, SegmentsThatCannotBeServedInPlaceGetATypedError) {
  const std::vector<int32_t> tokens = {15, 16, 17};
  ASSERT_TRUE(client_->Put(RandomSegment(tokens, DType::kF32)).ok());
  auto plan = client_->PlanPrompt(Plan(tokens, client::Delivery::kDeviceIpc));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), ErrorCode::kFailedPrecondition) << plan.status().ToString();
  // The frames path still serves it, and the daemon is fine.
  EXPECT_TRUE(client_->PlanPrompt(Plan(tokens, client::Delivery::kFrames)).ok());
  auto wrong_dtype = Plan(tokens, client::Delivery::kDeviceIpc);
  wrong_dtype.model.geometry.dtype = DType::kF32;
  EXPECT_EQ(client_->PlanPrompt(wrong_dtype).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(client_->Ping().ok());
}

TEST_F(DeviceDeliveryTest, SegmentsArePutFromDeviceMemoryThroughALease) {
  const std::vector<int32_t> tokens = {25, 26, 27, 28};
  const auto reference = RandomSegment(tokens, DType::kBF16);
  const uint64_t bytes = reference.layout.PayloadBytes();
  auto source = kernels::DeviceBuffer::Allocate(bytes);
  ASSERT_TRUE(source.ok());
  ASSERT_TRUE(kernels::CopyHostToDevice(source->data(), reference.payload.data(), bytes).ok());
  client::PutRequest put = reference;
  put.payload = Blob();  // the bytes go through the arena, not the socket
  std::byte* written_at = nullptr;
  auto info = client_->PutOnDevice(put, [&](std::byte* device) {
    written_at = device;
    return kernels::CopyDeviceToDevice(device, source->data(), bytes);
  });
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_NE(written_at, nullptr);
  EXPECT_TRUE(kernels::IsDeviceMemory(written_at));
  EXPECT_EQ(info->checksum, Checksum64(reference.payload.span()));
  EXPECT_EQ(info->payload_bytes, bytes);
  // Read back over the socket: the very bytes written on the GPU, checksum verified on arrival.
  auto back = client_->Get(info->context_key);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->payload.size(), bytes);
  EXPECT_EQ(std::memcmp(back->payload.data(), reference.payload.data(), bytes), 0);
  EXPECT_EQ(back->token_ids, tokens);

  // A writer that fails gets its error back and the lease is not left held: more failed puts
  // of half the 16 MiB arena than it holds, then one that fits.
  client::PutRequest half;
  half.layout = {kLayers, kHeads, 32 * 1024, kDim, DType::kBF16};  // 8 MiB
  ASSERT_EQ(half.layout.PayloadBytes(), 8u << 20);
  for (int i = 0; i < 3; ++i) {
    auto failed = client_->PutOnDevice(
        half, [](std::byte*) { return Error(ErrorCode::kInternal, "the writer broke"); });
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("the writer broke"), std::string::npos);
  }
  const std::vector<std::byte> zeros(half.layout.PayloadBytes());
  auto placed = client_->PutOnDevice(half, [&](std::byte* device) {
    return kernels::CopyHostToDevice(device, zeros.data(), zeros.size());
  });
  EXPECT_TRUE(placed.ok()) << placed.status().ToString();
  EXPECT_TRUE(client_->Ping().ok());
}

// A report whose KV a worker wrote into a lease records what the same report in frames does:
// two namespaces, one report each way, then the same plan in both realigns to the same bytes.
TEST_F(DeviceDeliveryTest, ReportsAreReadFromDeviceMemoryThroughALease) {
  client::ClientOptions other{endpoint_, "device-delivery-test", "test-frames", Hash128{3, 4},
                              std::chrono::milliseconds(2000)};
  auto framed = client::Client::Connect(other);
  ASSERT_TRUE(framed.ok()) << framed.status().ToString();
  const std::vector<int32_t> content = {40, 41, 42, 43, 44, 45}, after = {902, 903};
  const std::vector<int32_t> base_prefix = {1};
  const client::ReuseModel model{
      {kLayers, kHeads, 0, kDim, DType::kBF16}, std::vector<float>(kDim / 2, 0.01f), base_prefix};
  client::PutRequest base = RandomSegment(content, DType::kBF16);
  base.first_position = 1;
  base.prefix_hash = TokenPrefixHash(base_prefix);
  client::PlanRequest plan{"agent", model, {}, client::Delivery::kFrames};
  plan.segments = {{false, "", {900, 901}}, {true, "s", content}, {false, "", after}};
  client::ActualReport report{"agent", "s", model, content, 2, {}, after, 8, {}};
  report.placeholder_kv = RandomSegment({77, 1, 2, 3, 4, 5}, DType::kBF16).payload;
  report.following_kv = RandomSegment({78, 1}, DType::kBF16).payload;

  std::vector<client::PromptPlan> replans;
  for (client::Client* c : {client_.get(), framed->get()}) {
    ASSERT_TRUE(c->Put(base).ok());
    auto first = c->PlanPrompt(plan);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    ASSERT_EQ(first->segments[1].decision, client::ReuseDecision::kPrefill);
    ASSERT_TRUE(first->segments[1].report_actual);  // new content: an anchor, report asked
    Status reported;
    if (c == client_.get()) {
      client::ActualReport on_device = report;
      on_device.placeholder_kv = on_device.following_kv = Blob();  // through the arena
      reported = c->ReportActualOnDevice(on_device, [&](std::byte* p, std::byte* f) {
        KVCOMM_RETURN_IF_ERROR(kernels::CopyHostToDevice(p, report.placeholder_kv.data(),
                                                         report.placeholder_kv.size()));
        return kernels::CopyHostToDevice(f, report.following_kv.data(), report.following_kv.size());
      });
    } else {
      reported = c->ReportActual(report);
    }
    ASSERT_TRUE(reported.ok()) << reported.ToString();
    auto again = c->PlanPrompt(plan);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    ASSERT_EQ(again->segments[1].decision, client::ReuseDecision::kRealigned);
    replans.push_back(std::move(again).value());
  }
  for (size_t i = 0; i < plan.segments.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(replans[0].segments[i].decision, replans[1].segments[i].decision);
    const Blob &lease_kv = replans[0].segments[i].payload,
               &frames_kv = replans[1].segments[i].payload;
    ASSERT_EQ(lease_kv.size(), frames_kv.size());
    EXPECT_EQ(std::memcmp(lease_kv.data(), frames_kv.data(), lease_kv.size()), 0);
  }
  // A writer that fails gets its error back, nothing is reported, and kvcommd serves on.
  auto failed = client_->ReportActualOnDevice(report, [](std::byte*, std::byte*) {
    return Error(ErrorCode::kInternal, "the writer broke");
  });
  EXPECT_NE(failed.message().find("the writer broke"), std::string::npos) << failed.ToString();
  EXPECT_TRUE(client_->Ping().ok());
}

}  // namespace
}  // namespace kvcomm
