#include "daemon/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::daemon {
namespace {

std::string WriteConfig(const std::string& text) {
  std::string path = kvcomm::testing::TempDir("config") + "/kvcommd.toml";
  std::ofstream(path) << text;
  return path;
}

TEST(ParseByteSize, AcceptsBinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(*ParseByteSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseByteSize("1.5GiB"), 1610612736u);
  EXPECT_EQ(*ParseByteSize("2MB"), 2000000u);
  EXPECT_EQ(*ParseByteSize("0"), 0u);
  for (const char* bad : {"", "GiB", "12XB", "-4", "1.2.3MiB", "99999999999TiB"}) {
    EXPECT_FALSE(ParseByteSize(bad).ok()) << bad;
  }
}

TEST(DaemonConfig, TomlOverridesDefaults) {
  auto path = WriteConfig(R"(
endpoint = "tcp://127.0.0.1:7555"
workers = 2
max_request_bytes = "8MiB"
log_level = "debug"
[store]
host_capacity = "256MiB"
disk_capacity = 1073741824
persist = false
data_dir = "/tmp/kvcomm-test-data"
[anchors]
borrow_deltas = false
[checks]
first = 3
every = 0
max_changed = 0.5
)");
  DaemonConfig config = DaemonConfig::Defaults();
  EXPECT_TRUE(config.anchors.borrow_deltas);
  ASSERT_TRUE(config.MergeTomlFile(path).ok());
  EXPECT_FALSE(config.anchors.borrow_deltas);
  EXPECT_EQ(config.checks.first, 3u);
  EXPECT_EQ(config.checks.every, 0u);
  EXPECT_DOUBLE_EQ(config.checks.max_changed, 0.5);
  EXPECT_EQ(config.server.endpoint, "tcp://127.0.0.1:7555");
  EXPECT_EQ(config.server.workers, 2u);
  EXPECT_EQ(config.server.max_request_bytes, 8u << 20);
  EXPECT_EQ(config.store.host_capacity_bytes, 256u << 20);
  EXPECT_EQ(config.store.disk_capacity_bytes, 1u << 30);
  EXPECT_FALSE(config.store.persist);
  EXPECT_TRUE(config.Validate().ok());
}

TEST(DaemonConfig, TheShippedExampleConfigIsValid) {
  DaemonConfig config = DaemonConfig::Defaults();
  Status merged = config.MergeTomlFile(KVCOMM_SOURCE_DIR "/daemon/kvcommd.example.toml");
  ASSERT_TRUE(merged.ok()) << merged.ToString();
  EXPECT_TRUE(config.Validate().ok());
  EXPECT_EQ(config.store.host_capacity_bytes, 4ull << 30);
  EXPECT_EQ(config.store.disk_capacity_bytes, 100ull << 30);
  EXPECT_EQ(config.anchors.capacity, 20u);
  EXPECT_DOUBLE_EQ(config.anchors.entropy_threshold, 0.3);
  EXPECT_EQ(config.checks.first, ReuseCheckConfig{}.first);
  EXPECT_DOUBLE_EQ(config.checks.max_changed, ReuseCheckConfig{}.max_changed);
}

TEST(DaemonConfig, BadSettingsAreNamed) {
  struct Case {
    const char* toml;
    const char* must_mention;
  };
  const Case cases[] = {
      {"endpoints = \"x\"", "endpoints"},
      {"[store]\nhost_capacity = \"lots\"", "host_capacity"},
      {"[store]\npersist = \"yes\"", "store.persist"},
      {"[store]\ncolour = 1", "store.colour"},
      {"workers = -3", "workers"},
      {"[anchors]\ntop_p = \"most\"", "anchors.top_p"},
      {"[anchors]\nborrow_deltas = 1", "anchors.borrow_deltas"},
      {"[checks]\nfirst = -1", "checks.first"},
      {"[checks]\nmax_changed = 2", "checks.max_changed"},
      {"[checks]\nrate = 0.1", "checks.rate"},
      {"[ipc]\narena = \"big\"", "ipc.arena"},
      {"[ipc]\nlease_ttl_ms = 0", "ipc.lease_ttl_ms"},
      {"[ipc]\nlease = 1", "ipc.lease"},
      {"this is not toml", "kvcommd.toml"},
  };
  for (const auto& c : cases) {
    DaemonConfig config = DaemonConfig::Defaults();
    Status s = config.MergeTomlFile(WriteConfig(c.toml));
    ASSERT_FALSE(s.ok()) << c.toml;
    EXPECT_NE(s.message().find(c.must_mention), std::string::npos) << s.ToString();
  }
}

TEST(DaemonConfig, ValidateRejectsBadValues) {
  DaemonConfig config = DaemonConfig::Defaults();
  EXPECT_TRUE(config.Validate().ok());
  config.server.endpoint = "http://x";
  EXPECT_NE(config.Validate().message().find("ipc://"), std::string::npos);
  config = DaemonConfig::Defaults();
  config.store.host_capacity_bytes = 0;
  EXPECT_FALSE(config.Validate().ok());
  config = DaemonConfig::Defaults();
  config.server.log_level = "loud";
  EXPECT_FALSE(config.Validate().ok());
  config = DaemonConfig::Defaults();
  config.store.data_dir.clear();
  EXPECT_FALSE(config.Validate().ok());
  config = DaemonConfig::Defaults();
  config.anchors.eviction_window = config.anchors.capacity + 1;
  EXPECT_NE(config.Validate().message().find("eviction window"), std::string::npos);
}

TEST(DaemonConfig, TheLeaseArenaNeedsAGpuTierAndFewEnoughAnchors) {
  auto path = WriteConfig("[ipc]\narena = \"1GiB\"\nlease_ttl_ms = 2500\n");
  DaemonConfig config = DaemonConfig::Defaults();
  ASSERT_TRUE(config.MergeTomlFile(path).ok());
  EXPECT_EQ(config.ipc.arena_bytes, 1ull << 30);
  EXPECT_EQ(config.ipc.ttl_ms, 2500u);
  EXPECT_NE(config.Validate().message().find("store.gpu_capacity"), std::string::npos);
  config.store.gpu_capacity_bytes = 1ull << 30;
  EXPECT_TRUE(config.Validate().ok());
  config.anchors.capacity = 40;
  EXPECT_NE(config.Validate().message().find("anchors.capacity"), std::string::npos);
}

}  // namespace
}  // namespace kvcomm::daemon
