// kvcomm-agent: a worker that serves agent turns on one model for pipeline drivers
// (kvcomm-pipeline --pipeline FILE with agents that name a `worker`), reusing KV through kvcommd.
//   kvcomm-agent --model DIR --listen ENDPOINT [--daemon ENDPOINT] [--device cpu|cuda]
// Stops on SIGINT / SIGTERM after the turn in progress.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "agents/pipeline/worker.h"

using namespace kvcomm;

namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "kvcomm-agent: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvcomm-agent: serve agent turns on a model, reusing KV through kvcommd"};
  std::string model_dir, listen, device = "cpu", log_level = "info";
  pipeline::WorkerOptions options;
  int64_t daemon_timeout_ms = options.daemon_timeout.count();
  app.add_option("--model", model_dir,
                 "model directory (config.json, *.safetensors, tokenizer.model)")
      ->required();
  app.add_option("--listen", listen, "ipc://PATH or tcp://HOST:PORT to serve turns on")->required();
  app.add_option("--daemon", options.daemon_endpoint, "kvcommd endpoint (default: the usual one)");
  app.add_option("--daemon-timeout-ms", daemon_timeout_ms, "per kvcommd request")
      ->check(CLI::Range(int64_t{100}, int64_t{600000}));
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  std::string kv_delivery = "frames";
  app.add_option("--kv-delivery", kv_delivery,
                 "how kvcomm plans bring KV: frames (over the socket) or device (in place from "
                 "kvcommd's GPU through CUDA IPC; needs --device cuda on that GPU and kvcommd "
                 "with ipc.arena)")
      ->check(CLI::IsMember({"frames", "device"}));
  app.add_option("--log-level", log_level, "spdlog level")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  CLI11_PARSE(app, argc, argv);
  options.daemon_timeout = std::chrono::milliseconds(daemon_timeout_ms);
  if (kv_delivery == "device") {
    if (device != "cuda") return Fail(InvalidArgument("--kv-delivery device needs --device cuda"));
    options.kv_delivery = client::Delivery::kDeviceIpc;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e level=%l %v");

  auto model = runtime::Model::Load(
      model_dir, device == "cuda" ? runtime::Device::kCuda : runtime::Device::kCpu);
  if (!model.ok()) return Fail(model.status());
  auto tokenizer =
      runtime::Tokenizer::Load((std::filesystem::path(model_dir) / "tokenizer.model").string());
  if (!tokenizer.ok()) return Fail(tokenizer.status());

  sigset_t signals;  // taken by this thread; the serving thread inherits the mask
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  pipeline::AgentWorker worker(**model, **tokenizer, options);
  std::atomic<bool> stop{false};
  Status served;
  std::thread serving([&] {
    served = worker.Serve(listen, stop);
    if (!served.ok()) kill(getpid(), SIGTERM);  // wake the signal wait below
  });
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  stop.store(true);
  serving.join();
  if (!served.ok()) return Fail(served);
  spdlog::info("kvcomm-agent stopped after {} turns", worker.turns_served());
  return 0;
}
