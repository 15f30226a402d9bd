// store_bench: throughput of kvcommd over ipc:// next to a plain memcpy of the same bytes, and
// request round trips per second with 1 and 8 clients. Starts its own daemon in-process (host
// tier only, no persistence) unless --persist is given.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "agents/client/client.h"
#include "daemon/server.h"

namespace {

using namespace kvcomm;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs `op` repeatedly for at least `seconds` (and at least `min_iterations` times).
template <typename Op>
std::pair<int, double> TimeLoop(double seconds, int min_iterations, Op&& op) {
  int n = 0;
  auto start = Clock::now();
  while (n < min_iterations || Seconds(Clock::now() - start) < seconds) {
    op(n);
    ++n;
  }
  return {n, Seconds(Clock::now() - start)};
}

std::unique_ptr<client::Client> Connect(const std::string& endpoint) {
  client::ClientOptions options;
  options.endpoint = endpoint;
  options.client_name = "store_bench";
  options.name_space = "bench";
  options.model = FingerprintFromShape(32, 8, 128, DType::kBF16);
  options.timeout = std::chrono::seconds(60);
  auto client = client::Client::Connect(options);
  if (!client.ok()) {
    fmt::print(stderr, "store_bench: {}\n", client.status().ToString());
    std::exit(1);
  }
  return std::move(client).value();
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    fmt::print(stderr, "store_bench: {} failed: {}\n", what, s.ToString());
    std::exit(1);
  }
}

// A segment of Llama-3-8B shape (32 layers, 8 kv heads, head dim 128, bf16) with `tokens` tokens.
client::PutRequest MakeSegment(uint32_t tokens, uint32_t seed) {
  client::PutRequest put;
  put.layout = {32, 8, tokens, 128, DType::kBF16};
  std::vector<std::byte> bytes(put.layout.PayloadBytes());
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    uint64_t r = rng();
    std::memcpy(bytes.data() + i, &r, 8);
  }
  put.payload = Blob::FromVector(std::move(bytes));
  put.token_ids.resize(tokens);
  for (uint32_t t = 0; t < tokens; ++t) put.token_ids[t] = static_cast<int32_t>(seed * 100000 + t);
  return put;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"store_bench: kvcommd throughput and round trips over ipc://"};
  double seconds = 2.0;
  bool persist = false;
  app.add_option("--seconds", seconds, "time per measurement")->check(CLI::Range(0.05, 600.0));
  app.add_flag("--persist", persist, "write through to RocksDB as well");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  char dir_template[] = "/tmp/kvcomm-bench-XXXXXX";
  std::string dir = ::mkdtemp(dir_template);
  daemon::DaemonConfig config = daemon::DaemonConfig::Defaults();
  config.server.endpoint = "ipc://" + dir + "/kvcommd.sock";
  config.server.max_request_bytes = 256ull << 20;
  config.store.host_capacity_bytes = 2ull << 30;
  config.store.persist = persist;
  config.store.data_dir = dir + "/data";
  auto server = daemon::Server::Start(config);
  Check(server.status(), "starting kvcommd");
  auto client = Connect(config.server.endpoint);

  fmt::print(
      "store_bench: kvcommd in-process, {} workers, endpoint ipc://, host tier 2 GiB, persist={}\n",
      config.server.workers, persist);
  fmt::print(
      "segments: Llama-3-8B KV shape (32 layers x 8 kv heads x 128 dims, bf16) = 128 KiB per "
      "token; "
      "{} hardware threads; {:.1f} s per measurement\n\n",
      std::thread::hardware_concurrency(), seconds);
  fmt::print("{:<28} {:>10} {:>12} {:>12} {:>14}\n", "operation", "size", "ops", "MB/s",
             "vs memcpy");

  for (uint32_t tokens : {8u, 512u}) {  // 1 MiB and 64 MiB
    client::PutRequest base = MakeSegment(tokens, 1);
    const double mb = base.payload.size() / 1e6;
    std::vector<std::byte> sink(base.payload.size());
    auto [copies, copy_s] = TimeLoop(seconds, 5, [&](int) {
      std::memcpy(sink.data(), base.payload.data(), base.payload.size());
    });
    const double memcpy_mbs = copies * mb / copy_s;
    // Distinct keys, same bytes: every put stores a new segment (the host tier evicts when full).
    auto [puts, put_s] = TimeLoop(seconds, 5, [&](int i) {
      client::PutRequest put = base;
      put.token_ids[0] = 1'000'000 + i;
      Check(client->Put(put).status(), "put");
    });
    auto info = client->Put(base);
    Check(info.status(), "put");
    auto [gets, get_s] = TimeLoop(seconds, 5, [&](int) {
      auto got = client->Get(info->context_key);
      Check(got.status(), "get");
    });
    std::string size = fmt::format("{} MiB", base.payload.size() >> 20);
    fmt::print("{:<28} {:>10} {:>12} {:>12.0f} {:>14}\n", "memcpy (same bytes)", size, copies,
               memcpy_mbs, "1.00x");
    fmt::print("{:<28} {:>10} {:>12} {:>12.0f} {:>13.2f}x\n", "put (verify, store)", size, puts,
               puts * mb / put_s, puts * mb / put_s / memcpy_mbs);
    fmt::print("{:<28} {:>10} {:>12} {:>12.0f} {:>13.2f}x\n", "get (host tier hit)", size, gets,
               gets * mb / get_s, gets * mb / get_s / memcpy_mbs);
  }

  fmt::print("\n{:<28} {:>10} {:>12} {:>16}\n", "request", "clients", "requests", "round trips/s");
  auto info = client->Put(MakeSegment(8, 2));
  Check(info.status(), "put");
  for (int clients : {1, 8}) {
    for (const char* kind : {"ping", "lookup (1 key)"}) {
      std::vector<std::unique_ptr<client::Client>> pool;
      for (int c = 0; c < clients; ++c) pool.push_back(Connect(config.server.endpoint));
      std::atomic<long> total{0};
      auto start = Clock::now();
      std::vector<std::thread> threads;
      for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
          auto [n, s] = TimeLoop(seconds, 10, [&](int) {
            if (kind[0] == 'p') {
              Check(pool[c]->Ping(), "ping");
            } else {
              Check(pool[c]->Lookup({{info->context_key, client::KeyKind::kContext}}).status(),
                    "lookup");
            }
          });
          total += n;
        });
      }
      for (auto& t : threads) t.join();
      double elapsed = Seconds(Clock::now() - start);
      fmt::print("{:<28} {:>10} {:>12} {:>16.0f}\n", kind, clients, total.load(), total / elapsed);
    }
  }
  client.reset();
  Check((*server)->Stop(), "stopping kvcommd");
  server->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
