// kernels/device_realign.h (the realignment ops kvcommd runs on its GPU) against the fp32 CPU
// reference, and CUDA IPC between two processes.
#include "kernels/device_realign.h"

#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <numeric>

#include "kernels/device.h"
#include "tests/kernels/device_values.h"
#include "tests/kernels/random_values.h"

extern char** environ;

namespace kvcomm::kernels {
namespace {

using testing::RandomNormal;

std::vector<int32_t> Iota(int32_t first, int64_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<float> InvFreq(int64_t head_dim) {
  std::vector<float> f(head_dim / 2);
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = std::pow(10000.f, -2.f * static_cast<float>(i) / static_cast<float>(head_dim));
  return f;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float tolerance,
                 const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double{got[i]} - want[i]) / (1.0 + std::abs(want[i])));
  EXPECT_LT(worst, tolerance) << what;
}

// Segments of different lengths in separate allocations, as kvcommd's anchors lie in its GPU
// tier, and the same values cut to `tokens` and laid back to back for the CPU reference.
struct Anchors {
  std::vector<Dev> device;
  std::vector<DeviceSegmentRef> refs;
  std::vector<float> cut;  // [anchor][segment of `tokens` tokens]
};
Anchors MakeAnchors(const RealignShape& s, const std::vector<int64_t>& lengths, uint32_t seed,
                    float stddev) {
  Anchors out;
  const int64_t rows = s.layers * 2 * s.kv_heads;
  for (int64_t length : lengths) {
    const auto values = RandomNormal(rows * length * s.head_dim, seed++, stddev, true);
    out.device.push_back(ToDeviceBf16(values));
    for (int64_t r = 0; r < rows; ++r)
      out.cut.insert(out.cut.end(), values.begin() + r * length * s.head_dim,
                     values.begin() + (r * length + s.tokens) * s.head_dim);
  }
  for (size_t a = 0; a < lengths.size(); ++a)
    out.refs.push_back({out.device[a].buffer.data(), lengths[a]});
  return out;
}

TEST(DeviceRealigner, MatchesCpuForPlaceholdersAndFollowingSegments) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  const RealignShape s{.layers = 3, .kv_heads = 2, .tokens = 37, .head_dim = 32, .anchors = 3};
  const int64_t n = s.SegmentElements();
  const auto base = RandomNormal(n, 1, 1.f, true);
  const Anchors anchors = MakeAnchors(s, {37, 45, 40}, 2, 1.f);
  const Anchors deltas = MakeAnchors(s, {40, 37, 52}, 20, 0.2f);
  const auto freq = InvFreq(s.head_dim);
  const auto from = Iota(5, s.tokens), to = Iota(300, s.tokens);
  Dev d_base = ToDeviceBf16(base), d_out = ToDeviceBf16(std::vector<float>(n));
  DeviceRealigner realigner;

  // Token sums and the value norm, as the reuse decision takes them.
  std::vector<float> sums(s.anchors * s.tokens * 3), want_sums(sums.size());
  ASSERT_TRUE(realigner.TokenSums(s, d_base.buffer.data(), anchors.refs, sums).ok());
  cpu::AnchorDistances(s, base.data(), anchors.cut.data(), want_sums.data());
  ExpectClose(sums, want_sums, 1e-3f, "token sums");
  auto norm = realigner.ValueSquaredNorm(s, d_base.buffer.data());
  ASSERT_TRUE(norm.ok()) << norm.status().ToString();
  double want_norm = 0;
  for (int64_t l = 0; l < s.layers; ++l)
    for (int64_t i = 0; i < s.kv_heads * s.tokens * s.head_dim; ++i) {
      const float v = base[(2 * l + 1) * s.kv_heads * s.tokens * s.head_dim + i];
      want_norm += double{v} * v;
    }
  EXPECT_NEAR(*norm, want_norm, 1e-4 * want_norm);

  // Per-token weights given by the host.
  const auto key_w = RandomNormal(s.anchors * s.tokens, 4, 0.3f);
  const auto value_w = RandomNormal(s.anchors * s.tokens, 5, 0.3f);
  ASSERT_TRUE(realigner.SetTokenWeights(key_w, value_w).ok());
  ASSERT_TRUE(
      realigner.Realign(s, d_base.buffer.data(), from, to, freq, deltas.refs, d_out.buffer.data())
          .ok());
  std::vector<float> want(n);
  cpu::RealignKv(s, base.data(), from, to, freq, deltas.cut.data(), key_w.data(), value_w.data(),
                 want.data());
  ExpectClose(FromDeviceBf16(d_out, n), want, 2e-2f, "per-token realignment");

  // Per-channel weights computed on the device from the placeholder's bases.
  const float temperature = 0.5f;
  ASSERT_TRUE(realigner.SetChannelWeights(s, d_base.buffer.data(), anchors.refs, temperature).ok());
  std::vector<float> channel_sums(s.anchors * s.Channels()), weights(channel_sums.size());
  cpu::AnchorChannelDistances(s, base.data(), anchors.cut.data(), channel_sums.data());
  cpu::SoftmaxOverAnchors(channel_sums.data(), s.anchors, s.Channels(), 1, 0, 1.f, true,
                          temperature, weights.data());
  RealignShape following = s;
  following.tokens = 9;
  following.per_channel_weights = true;
  const int64_t fn = following.SegmentElements();
  const auto f_base = RandomNormal(fn, 6, 1.f, true);
  const Anchors f_deltas = MakeAnchors(following, {9, 9, 9}, 30, 0.2f);
  Dev d_f_base = ToDeviceBf16(f_base), d_f_out = ToDeviceBf16(std::vector<float>(fn));
  const auto f_from = Iota(50, following.tokens), f_to = Iota(400, following.tokens);
  ASSERT_TRUE(realigner
                  .Realign(following, d_f_base.buffer.data(), f_from, f_to, freq, f_deltas.refs,
                           d_f_out.buffer.data())
                  .ok());
  std::vector<float> f_want(fn);
  cpu::RealignKv(following, f_base.data(), f_from, f_to, freq, f_deltas.cut.data(), weights.data(),
                 weights.data(), f_want.data());
  ExpectClose(FromDeviceBf16(d_f_out, fn), f_want, 2e-2f, "per-channel realignment");
}

TEST(DeviceRealigner, PositionFreeDifferenceMatchesCpu) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  const RealignShape s{.layers = 3, .kv_heads = 2, .tokens = 29, .head_dim = 64};
  const int64_t n = s.SegmentElements();
  const auto a = RandomNormal(n, 21, 1.f, true), b = RandomNormal(n, 22, 1.f, true);
  const auto freq = InvFreq(s.head_dim);
  Dev d_a = ToDeviceBf16(a), d_b = ToDeviceBf16(b), d_out = ToDeviceBf16(std::vector<float>(n));
  DeviceRealigner realigner;
  ASSERT_TRUE(realigner
                  .PositionFreeDifference(s, d_a.buffer.data(), 1500, d_b.buffer.data(), 5, freq,
                                          d_out.buffer.data())
                  .ok());
  std::vector<float> want(n);
  cpu::PositionFreeDifference(s, a.data(), 1500, b.data(), 5, freq, want.data());
  ExpectClose(FromDeviceBf16(d_out, n), want, 2e-2f, "position-free difference");
}

TEST(DeviceRealigner, TakesMoreAnchorsThanOneLaunchForDistancesButNotForABlend) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  RealignShape s{.layers = 2, .kv_heads = 1, .tokens = 5, .head_dim = 16, .anchors = 40};
  const auto base = RandomNormal(s.SegmentElements(), 1, 1.f, true);
  const Anchors anchors = MakeAnchors(s, std::vector<int64_t>(40, 6), 2, 1.f);
  Dev d_base = ToDeviceBf16(base);
  DeviceRealigner realigner;
  std::vector<float> sums(s.anchors * s.tokens * 3), want(sums.size());
  ASSERT_TRUE(realigner.TokenSums(s, d_base.buffer.data(), anchors.refs, sums).ok());
  cpu::AnchorDistances(s, base.data(), anchors.cut.data(), want.data());
  ExpectClose(sums, want, 1e-3f, "token sums over 40 anchors");
  Dev d_out = ToDeviceBf16(std::vector<float>(s.SegmentElements()));
  const std::vector<float> w(s.anchors * s.tokens, 1.f / 40);
  ASSERT_TRUE(realigner.SetTokenWeights(w, w).ok());
  EXPECT_EQ(realigner
                .Realign(s, d_base.buffer.data(), Iota(0, 5), Iota(3, 5), InvFreq(16), anchors.refs,
                         d_out.buffer.data())
                .code(),
            ErrorCode::kInvalidArgument);
  // An anchor shorter than the segment is refused, not read past its end.
  const std::vector<DeviceSegmentRef> short_one = {anchors.refs[0], {anchors.refs[1].data, 4}};
  std::vector<float> two(2 * s.tokens * 3);
  EXPECT_EQ(realigner.TokenSums(s, d_base.buffer.data(), short_one, two).code(),
            ErrorCode::kInvalidArgument);
}

TEST(DeviceRealigner, RejectsHeadDimsTheKernelsCannotLoad) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  DeviceRealigner realigner;
  const RealignShape s{.layers = 1, .kv_heads = 1, .tokens = 2, .head_dim = 12, .anchors = 1};
  std::vector<float> sums(6);
  Dev d = ToDeviceBf16(std::vector<float>(48, 1.f));
  const std::vector<DeviceSegmentRef> anchors = {{d.buffer.data(), 2}};
  EXPECT_EQ(realigner.TokenSums(s, d.buffer.data(), anchors, sums).code(),
            ErrorCode::kInvalidArgument);
}

// The child half of the IPC test: maps the handle the parent exported and checks its bytes.
constexpr const char* kIpcHandleEnv = "KVCOMM_TEST_IPC_HANDLE";
std::string Hex(std::string_view bytes) {
  std::string out;
  for (char c : bytes) out += fmt::format("{:02x}", static_cast<uint8_t>(c));
  return out;
}
std::string Unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}
std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 37 + 11);
  return p;
}

TEST(CudaIpcChild, MapsTheParentsBuffer) {
  const char* handle = std::getenv(kIpcHandleEnv);
  if (handle == nullptr) GTEST_SKIP() << "run by CudaIpc.AnotherProcessReadsAndWritesTheBuffer";
  auto mapping = IpcMapping::Open(Unhex(handle));
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  const auto want = Pattern(4096);
  std::vector<uint8_t> got(want.size());
  ASSERT_TRUE(CopyDeviceToHost(got.data(), mapping->data(), got.size()).ok());
  EXPECT_EQ(got, want);
  std::vector<uint8_t> reply(got.rbegin(), got.rend());
  ASSERT_TRUE(CopyHostToDevice(mapping->data(), reply.data(), reply.size()).ok());
}

TEST(CudaIpc, AnotherProcessReadsAndWritesTheBuffer) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  if (std::getenv(kIpcHandleEnv) != nullptr) GTEST_SKIP() << "the child half runs";
  auto buffer = DeviceBuffer::Allocate(1 << 20);
  ASSERT_TRUE(buffer.ok());
  const auto pattern = Pattern(4096);
  ASSERT_TRUE(CopyHostToDevice(buffer->data(), pattern.data(), pattern.size()).ok());
  auto handle = ExportIpcHandle(*buffer);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  ASSERT_EQ(handle->size(), kIpcHandleBytes);
  // This process cannot map its own allocation: the handle is for other processes.
  EXPECT_FALSE(IpcMapping::Open(*handle).ok());
  EXPECT_EQ(IpcMapping::Open("short").status().code(), ErrorCode::kInvalidArgument);

  // A fresh process (this test binary, running only the child half) maps it.
  const std::string env = std::string(kIpcHandleEnv) + "=" + Hex(*handle);
  std::vector<std::string> args = {"/proc/self/exe", "--gtest_filter=CudaIpcChild.*"};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string env_copy = env;
  envp.push_back(env_copy.data());
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  pid_t child = 0;
  ASSERT_EQ(posix_spawn(&child, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child failed: " << status;
  std::vector<uint8_t> back(pattern.size());
  ASSERT_TRUE(CopyDeviceToHost(back.data(), buffer->data(), back.size()).ok());
  EXPECT_EQ(back, std::vector<uint8_t>(pattern.rbegin(), pattern.rend()));
}

}  // namespace
}  // namespace kvcomm::kernels
