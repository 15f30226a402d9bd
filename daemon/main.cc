// kvcommd: the kvcomm daemon. Settings come from defaults, then --config FILE (TOML), then
// flags. Stops gracefully on SIGINT / SIGTERM.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "daemon/server.h"

using kvcomm::Status;
using kvcomm::daemon::DaemonConfig;

namespace {

int Fail(const Status& status) {
  std::fprintf(stderr, "kvcommd: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvcommd: KV-cache sharing daemon for multi-agent LLM pipelines"};
  std::string config_file, endpoint, data_dir, host_capacity, gpu_capacity, disk_capacity,
      log_level, max_request, ipc_arena;
  bool no_persist = false;
  uint32_t workers = 0;
  app.add_option("--config", config_file, "TOML configuration file")->check(CLI::ExistingFile);
  app.add_option("--endpoint", endpoint, "ipc://PATH or tcp://HOST:PORT to listen on");
  app.add_option("--data-dir", data_dir, "RocksDB directory for persisted segments");
  app.add_option("--host-capacity", host_capacity, "host tier capacity, e.g. 4GiB");
  app.add_option("--gpu-capacity", gpu_capacity, "GPU tier capacity, e.g. 8GiB (0: no GPU tier)");
  app.add_option("--disk-capacity", disk_capacity, "disk tier capacity (0: unlimited)");
  app.add_option("--ipc-arena", ipc_arena,
                 "device arena lent to workers on this GPU through CUDA IPC, e.g. 2GiB (0: none)");
  app.add_flag("--no-persist", no_persist, "keep segments in memory only");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off");
  app.add_option("--workers", workers, "request-handling threads");
  app.add_option("--max-request-bytes", max_request, "largest request accepted, e.g. 256MiB");
  CLI11_PARSE(app, argc, argv);

  DaemonConfig config = DaemonConfig::Defaults();
  if (!config_file.empty()) {
    Status merged = config.MergeTomlFile(config_file);
    if (!merged.ok()) return Fail(merged);
  }
  auto apply_size = [](const std::string& text, const char* flag, uint64_t* out) -> Status {
    if (text.empty()) return Status::Ok();
    auto bytes = kvcomm::daemon::ParseByteSize(text);
    if (!bytes.ok()) return bytes.status().WithContext(flag);
    *out = *bytes;
    return Status::Ok();
  };
  for (Status s :
       {apply_size(host_capacity, "--host-capacity", &config.store.host_capacity_bytes),
        apply_size(gpu_capacity, "--gpu-capacity", &config.store.gpu_capacity_bytes),
        apply_size(disk_capacity, "--disk-capacity", &config.store.disk_capacity_bytes),
        apply_size(ipc_arena, "--ipc-arena", &config.ipc.arena_bytes),
        apply_size(max_request, "--max-request-bytes", &config.server.max_request_bytes)}) {
    if (!s.ok()) return Fail(s);
  }
  if (!endpoint.empty()) config.server.endpoint = endpoint;
  if (!data_dir.empty()) config.store.data_dir = data_dir;
  if (no_persist) config.store.persist = false;
  if (!log_level.empty()) config.server.log_level = log_level;
  if (workers != 0) config.server.workers = workers;
  if (Status valid = config.Validate(); !valid.ok()) return Fail(valid);

  spdlog::set_level(spdlog::level::from_str(config.server.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e level=%l %v");

  // Signals are taken synchronously by this thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = kvcomm::daemon::Server::Start(config);
  if (!server.ok()) return Fail(server.status());
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received signal={}", strsignal(signal_number));
  Status stopped = (*server)->Stop();
  return stopped.ok() ? 0 : 1;
}
