// kvcommd end to end through real sockets: round trips, many concurrent clients, restarts.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "tests/integration/daemon_fixture.h"

namespace kvcomm::testing {
namespace {

bool SameBytes(const Blob& a, const Blob& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

class DaemonTest : public DaemonFixture {};

TEST_F(DaemonTest, PutGetLookupListRemoveRoundTrip) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Ping().ok());
  auto put = MakePut(32, 1);
  put.positions.assign(32, 0);
  for (int i = 0; i < 32; ++i) put.positions[i] = 100 + i;
  put.first_position = 100;
  put.prefix_hash = TokenPrefixHash(std::vector<int32_t>{7, 8, 9});
  auto info = client->Put(put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->context_key,
            ComputeContextKey(TestModel(), "test", put.prefix_hash, put.token_ids));
  EXPECT_EQ(info->tier, client::Tier::kHost);

  auto got = client->Get(info->context_key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(SameBytes(got->payload, put.payload));
  EXPECT_EQ(got->token_ids, put.token_ids);
  EXPECT_EQ(got->positions, put.positions);
  EXPECT_EQ(got->prefix_hash, put.prefix_hash);
  EXPECT_EQ(got->info.first_position, 100);

  auto by_content = client->Get(info->content_key, client::KeyKind::kContent);
  ASSERT_TRUE(by_content.ok());
  EXPECT_EQ(by_content->info.context_key, info->context_key);

  auto lookup = client->Lookup({{info->context_key, client::KeyKind::kContext},
                                {info->content_key, client::KeyKind::kContent},
                                {SegmentKey{1, 2}, client::KeyKind::kContext}});
  ASSERT_TRUE(lookup.ok());
  EXPECT_TRUE((*lookup)[0].found);
  EXPECT_EQ((*lookup)[0].tier, client::Tier::kHost);
  EXPECT_TRUE((*lookup)[1].found);
  EXPECT_FALSE((*lookup)[2].found);

  auto page = client->List(std::nullopt, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->segments.size(), 1u);
  EXPECT_FALSE(page->has_more);

  ASSERT_TRUE(client->Remove(info->context_key).ok());
  EXPECT_EQ(client->Get(info->context_key).status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(client->Remove(info->context_key).code(), ErrorCode::kNotFound);

  auto stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->puts, 1u);
  EXPECT_GE(stats->gets, 3u);
  EXPECT_GT(stats->bytes_in, put.payload.size());
  EXPECT_GT(stats->bytes_out, 2 * put.payload.size());
  bool counted_not_found = false;
  for (auto [code, n] : stats->errors) counted_not_found |= code == ErrorCode::kNotFound && n >= 2;
  EXPECT_TRUE(counted_not_found);
}

TEST_F(DaemonTest, PuttingFromDeviceMemoryNeedsALeaseArena) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto put = MakePut(8, 2);
  bool wrote = false;
  auto refused = client->PutOnDevice(put, [&](std::byte*) {
    wrote = true;
    return Status::Ok();
  });
  EXPECT_EQ(refused.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("ipc.arena"), std::string::npos)
      << refused.status().ToString();
  EXPECT_FALSE(wrote);
  EXPECT_TRUE(client->Put(put).ok());  // frames still work
}

TEST_F(DaemonTest, ManyConcurrentClientsPutAndGetVerifiedBytes) {
  constexpr int kClients = 8, kPerClient = 40;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = Connect();
      if (!client) {
        ++failures;
        return;
      }
      for (int i = 0; i < kPerClient; ++i) {
        auto put = MakePut(16 + (i * 7) % 200, c * 1000 + i);
        auto info = client->Put(put);
        if (!info.ok()) {
          ++failures;
          continue;
        }
        auto got = client->Get(info->context_key);
        if (!got.ok() || !SameBytes(got->payload, put.payload)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto stats = Connect()->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->puts, uint64_t{kClients * kPerClient});
  EXPECT_EQ(stats->errors.size(), 0u);
}

TEST_F(DaemonTest, RestartKeepsPersistedSegmentsAndClientsCarryOn) {
  auto client = Connect();
  std::vector<std::pair<SegmentKey, client::PutRequest>> stored;
  for (int i = 0; i < 10; ++i) {
    auto put = MakePut(64, 50 + i);
    auto info = client->Put(put);
    ASSERT_TRUE(info.ok());
    stored.emplace_back(info->context_key, put);
  }
  StopDaemon();
  client->set_timeout(std::chrono::milliseconds(300));
  ErrorCode down = client->Ping().code();
  EXPECT_TRUE(down == ErrorCode::kUnavailable || down == ErrorCode::kDeadlineExceeded)
      << static_cast<int>(down);
  client->set_timeout(std::chrono::milliseconds(10000));
  StartDaemon();
  // The same client reconnects and says Hello again on its own.
  for (const auto& [key, put] : stored) {
    auto got = client->Get(key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(SameBytes(got->payload, put.payload));
    EXPECT_EQ(got->info.tier, client::Tier::kHost);  // promoted from disk by the read
  }
  auto stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->promotions, stored.size());
}

TEST_F(DaemonTest, NamespacesAreIsolatedAndReadOnlySessionsCannotWrite) {
  auto a = Connect("tenant-a");
  auto info = a->Put(MakePut(8, 1));
  ASSERT_TRUE(info.ok());
  auto b = Connect("tenant-b");
  EXPECT_EQ(b->Get(info->context_key).status().code(), ErrorCode::kNotFound);
  auto listed = b->List(std::nullopt, 100);
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->segments.empty());

  client::ClientOptions options;
  options.endpoint = config_.server.endpoint;
  options.name_space = "tenant-a";  // no model: read-only
  auto reader = client::Client::Connect(options);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE((*reader)->Get(info->context_key).ok());
  EXPECT_EQ((*reader)->Put(MakePut(8, 2)).status().code(), ErrorCode::kPermissionDenied);
}

TEST_F(DaemonTest, StopAnswersARequestAlreadyBeingHandled) {
  auto client = Connect();
  auto put = MakePut(2048, 9);  // 256 KiB
  Result<client::SegmentInfo> result = Status(ErrorCode::kInternal, "not run");
  const uint64_t before = server_->counters().requests();
  std::thread putter([&] { result = client->Put(put); });
  while (server_->counters().requests() == before) std::this_thread::yield();  // a worker has it
  ASSERT_TRUE(server_->Stop().ok());
  putter.join();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  server_.reset();
  StartDaemon();  // and it was flushed to disk before the daemon stopped
  EXPECT_TRUE(Connect()->Get(result->context_key).ok());
}

}  // namespace
}  // namespace kvcomm::testing
