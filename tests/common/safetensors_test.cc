#include "common/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace kvcomm {
namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / ("st-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  std::string Path(const std::string& name) { return (dir_ / name).string(); }
  std::string ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void WriteAll(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  std::filesystem::path dir_;
};

TEST_F(SafetensorsTest, WriteThenOpenReturnsSameTensorsAndMetadata) {
  std::vector<float> a(24);
  std::mt19937 rng(3);
  for (auto& x : a) x = std::normal_distribution<float>()(rng);
  std::vector<int32_t> ids = {5, 6, 7};
  ASSERT_TRUE(WriteSafetensors(Path("x.safetensors"),
                               {{"a", DType::kF32, {2, 3, 4}, std::as_bytes(std::span(a))},
                                {"ids", DType::kI32, {3}, std::as_bytes(std::span(ids))}},
                               {{"namespace", "demo"}})
                  .ok());
  auto file = SafetensorsFile::Open(Path("x.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const auto* t = file->Find("a");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(std::memcmp(t->data.data(), a.data(), a.size() * 4), 0);
  ASSERT_NE(file->Find("ids"), nullptr);
  EXPECT_EQ(file->metadata().at("namespace"), "demo");
  EXPECT_EQ(file->Find("missing"), nullptr);
}

TEST_F(SafetensorsTest, TruncatedFileIsAnErrorNamingTheTensor) {
  std::vector<float> a(1000, 1.5f);
  ASSERT_TRUE(WriteSafetensors(Path("t.safetensors"),
                               {{"weights", DType::kF32, {1000}, std::as_bytes(std::span(a))}}, {})
                  .ok());
  std::string bytes = ReadAll(Path("t.safetensors"));
  WriteAll(Path("t.safetensors"), bytes.substr(0, bytes.size() - 10));
  auto file = SafetensorsFile::Open(Path("t.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("weights"), std::string::npos) << file.status().ToString();
}

TEST_F(SafetensorsTest, MalformedHeadersAreRejected) {
  const std::vector<std::string> bad_headers = {
      "not json",
      "[1,2]",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",   // size mismatch
      R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",   // unsupported dtype
      R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",  // negative dim
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",   // reversed offsets
      R"({"a":{"dtype":"F32","shape":[1]}})",                        // no offsets
      R"({"__metadata__":{"k":5}})",                                 // non-string metadata
  };
  for (const auto& header : bad_headers) {
    std::string file(8, '\0');
    uint64_t n = header.size();
    std::memcpy(file.data(), &n, 8);
    file += header + std::string(16, '\0');
    WriteAll(Path("bad.safetensors"), file);
    auto parsed = SafetensorsFile::Open(Path("bad.safetensors"));
    EXPECT_FALSE(parsed.ok()) << header;
  }
  WriteAll(Path("short.safetensors"), "abc");
  EXPECT_FALSE(SafetensorsFile::Open(Path("short.safetensors")).ok());
  std::string huge(8, '\xff');
  WriteAll(Path("huge.safetensors"), huge + "{}");
  EXPECT_FALSE(SafetensorsFile::Open(Path("huge.safetensors")).ok());
  EXPECT_FALSE(SafetensorsFile::Open(Path("does-not-exist")).ok());
}

}  // namespace
}  // namespace kvcomm
