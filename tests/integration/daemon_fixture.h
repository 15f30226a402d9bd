// A real kvcommd (daemon::Server) on an ipc:// socket in a temp directory, with real RocksDB.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "agents/client/client.h"
#include "daemon/server.h"

namespace kvcomm::testing {

class DaemonFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // (Re)starts the daemon on the same endpoint and data directory.
  void StartDaemon();
  void StopDaemon();

  // A client in namespace "test" with the model fingerprint the test segments use.
  std::unique_ptr<client::Client> Connect(const std::string& name_space = "test");
  // A put request with `tokens` tokens of seeded random KV (2 layers, 2 heads, dim 8, F32).
  static client::PutRequest MakePut(uint32_t tokens, uint64_t seed);
  static ModelFingerprint TestModel();

  daemon::DaemonConfig config_;
  std::string dir_;
  std::unique_ptr<daemon::Server> server_;
};

}  // namespace kvcomm::testing
