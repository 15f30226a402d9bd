#include "tests/integration/daemon_fixture.h"

#include <filesystem>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::testing {

void DaemonFixture::SetUp() {
  dir_ = TempDir("daemon");
  config_ = daemon::DaemonConfig::Defaults();
  config_.server.endpoint = "ipc://" + dir_ + "/kvcommd.sock";
  config_.server.workers = 4;
  config_.server.max_request_bytes = 8 << 20;
  config_.store.data_dir = dir_ + "/data";
  config_.store.host_capacity_bytes = 64 << 20;
  StartDaemon();
}

void DaemonFixture::TearDown() {
  StopDaemon();
  std::filesystem::remove_all(dir_);
}

void DaemonFixture::StartDaemon() {
  auto server = daemon::Server::Start(config_);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  server_ = std::move(server).value();
}

void DaemonFixture::StopDaemon() {
  if (server_) {
    EXPECT_TRUE(server_->Stop().ok());
  }
  server_.reset();
}

ModelFingerprint DaemonFixture::TestModel() { return FingerprintFromShape(2, 2, 8, DType::kF32); }

std::unique_ptr<client::Client> DaemonFixture::Connect(const std::string& name_space) {
  client::ClientOptions options;
  options.endpoint = config_.server.endpoint;
  options.name_space = name_space;
  options.model = TestModel();
  options.timeout = std::chrono::milliseconds(10000);
  auto client = client::Client::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(client).value() : nullptr;
}

client::PutRequest DaemonFixture::MakePut(uint32_t tokens, uint64_t seed) {
  kvstore::Segment segment = MakeSegment(tokens, seed);
  client::PutRequest put;
  put.layout = segment.meta.layout;
  put.payload = segment.payload;
  put.token_ids = segment.meta.token_ids;
  return put;
}

}  // namespace kvcomm::testing
