// The client library never hangs or crashes: a missing daemon, a silent peer and an
// unparseable endpoint all come back as Status within the deadline.
#include "agents/client/client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <zmq.hpp>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::client {
namespace {

using Clock = std::chrono::steady_clock;

TEST(Client, NoDaemonIsUnavailableWithinTheDeadline) {
  ClientOptions options;
  options.endpoint = "ipc://" + kvcomm::testing::TempDir("nodaemon") + "/missing.sock";
  options.timeout = std::chrono::milliseconds(300);
  auto start = Clock::now();
  auto client = Client::Connect(options);
  auto took = Clock::now() - start;
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(client.status().message().find("missing.sock"), std::string::npos);
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST(Client, SilentPeerIsADeadlineExceeded) {
  zmq::context_t context(1);
  zmq::socket_t silent(context, zmq::socket_type::router);  // accepts, never answers
  std::string endpoint = "ipc://" + kvcomm::testing::TempDir("silent") + "/silent.sock";
  silent.bind(endpoint);
  ClientOptions options;
  options.endpoint = endpoint;
  options.timeout = std::chrono::milliseconds(300);
  auto start = Clock::now();
  auto client = Client::Connect(options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kDeadlineExceeded);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
}

TEST(Client, BadEndpointAndNamespaceAreInvalidArguments) {
  ClientOptions options;
  options.endpoint = "nonsense://x";
  EXPECT_EQ(Client::Connect(options).status().code(), ErrorCode::kInvalidArgument);
  options.endpoint = "ipc:///tmp/x.sock";
  options.name_space = "bad namespace";
  EXPECT_EQ(Client::Connect(options).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvcomm::client
