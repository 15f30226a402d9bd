// kvcommctl: inspect and use a running kvcommd from the command line.
//
//   kvcommctl [--endpoint E] [--namespace N] [--timeout-ms T] COMMAND
//     ping | stats [--json] | anchors [--json] | ls [--json] | put FILE | get KEY OUT [--content]
//     | rm KEY
//
// Exit status 0 on success; otherwise 1 with a one-line reason on stderr.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "agents/client/client.h"
#include "agents/client/segment_file.h"
#include "common/endpoint.h"

namespace {

using namespace kvcomm;
using namespace kvcomm::client;
using nlohmann::json;

int Fail(const Status& status) {
  std::fprintf(stderr, "kvcommctl: %s\n", status.ToString().c_str());
  return 1;
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", value, units[unit]);
}

json InfoJson(const SegmentInfo& s) {
  return {{"context_key", s.context_key.ToHex()},
          {"content_key", s.content_key.ToHex()},
          {"fingerprint", s.fingerprint.ToHex()},
          {"namespace", s.name_space},
          {"layers", s.layout.num_layers},
          {"kv_heads", s.layout.kv_heads},
          {"tokens", s.layout.tokens},
          {"head_dim", s.layout.head_dim},
          {"dtype", DTypeName(s.layout.dtype)},
          {"payload_bytes", s.payload_bytes},
          {"checksum", s.checksum},
          {"first_position", s.first_position},
          {"created_unix_ms", s.created_unix_ms},
          {"last_access_unix_ms", s.last_access_unix_ms},
          {"access_count", s.access_count},
          {"tier", TierName(s.tier)}};
}

double ReuseRate(const ReuseCounter& c) {
  return c.tokens_requested
             ? static_cast<double>(c.tokens_exact + c.tokens_realigned) / c.tokens_requested
             : 0.0;
}

json ReuseJson(const std::vector<ReuseCounter>& counters) {
  json out = json::array();
  for (const auto& c : counters) {
    out.push_back({{"namespace", c.name_space},
                   {"agent", c.agent},
                   {"slot", c.slot},
                   {"tokens_requested", c.tokens_requested},
                   {"tokens_exact", c.tokens_exact},
                   {"tokens_realigned", c.tokens_realigned},
                   {"tokens_prefill", c.tokens_prefill},
                   {"reuse_rate", ReuseRate(c)},
                   {"anchors_created", c.anchors_created},
                   {"anchors_evicted", c.anchors_evicted},
                   {"bytes_moved", c.bytes_moved},
                   {"realign_seconds", c.realign_seconds},
                   {"plan_seconds", c.plan_seconds},
                   {"checks", c.checks},
                   {"checks_changed", c.checks_changed},
                   {"tokens_gated", c.tokens_gated}});
  }
  return out;
}

void PrintReuse(const std::vector<ReuseCounter>& counters) {
  if (counters.empty()) return;
  constexpr auto kRow =
      "{:<18} {:<28} {:<26} {:>9} {:>8} {:>9} {:>8} {:>6} {:>5} {:>5} {:>9} {:>9} {:>9} {:>8} "
      "{:>6}\n";
  fmt::print("\nKVCOMM reuse (tokens)\n");
  fmt::print(kRow, "namespace", "agent", "slot", "requested", "exact", "realigned", "prefill",
             "reuse", "anch+", "anch-", "moved", "realign", "plan", "changed", "gated");
  for (const auto& c : counters) {
    fmt::print(kRow, c.name_space, c.agent, c.slot.empty() ? "(template)" : c.slot,
               c.tokens_requested, c.tokens_exact, c.tokens_realigned, c.tokens_prefill,
               fmt::format("{:.1f}%", 100 * ReuseRate(c)), c.anchors_created, c.anchors_evicted,
               HumanBytes(c.bytes_moved), fmt::format("{:.1f}ms", 1e3 * c.realign_seconds),
               c.slot.empty() ? fmt::format("{:.1f}ms", 1e3 * c.plan_seconds) : "",
               c.checks ? fmt::format("{}/{}", c.checks_changed, c.checks) : "", c.tokens_gated);
  }
}

int Anchors(Client& client, bool as_json) {
  auto slots = client.ListAnchors();
  if (!slots.ok()) return Fail(slots.status());
  if (as_json) {
    json out = json::array();
    for (const auto& slot : *slots) {
      json anchors = json::array();
      for (const auto& a : slot.anchors) {
        anchors.push_back({{"base_key", a.base_key.ToHex()},
                           {"tokens", a.tokens},
                           {"activations", a.activations},
                           {"agents", a.agents}});
      }
      out.push_back({{"slot", slot.slot}, {"anchors", anchors}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (const auto& slot : *slots) {
    fmt::print("slot {} ({} anchors, oldest first)\n", slot.slot, slot.anchors.size());
    for (const auto& a : slot.anchors) {
      fmt::print("  {}  {:>6} tokens  {:>6} activations  agents: {}\n", a.base_key.ToHex(),
                 a.tokens, a.activations, fmt::join(a.agents, ", "));
    }
  }
  fmt::print("{} slots in namespace '{}'\n", slots->size(), client.options().name_space);
  return 0;
}

int Stats(Client& client, bool as_json) {
  auto stats = client.Stats();
  if (!stats.ok()) return Fail(stats.status());
  if (as_json) {
    json tiers = json::array();
    for (const auto& t : stats->tiers) {
      tiers.push_back({{"tier", TierName(t.tier)},
                       {"segments", t.segments},
                       {"bytes", t.bytes},
                       {"capacity_bytes", t.capacity_bytes},
                       {"hits", t.hits},
                       {"misses", t.misses}});
    }
    json errors = json::object();
    for (const auto& [code, n] : stats->errors) errors[std::string(ErrorCodeName(code))] = n;
    json out = {{"tiers", tiers},
                {"puts", stats->puts},
                {"gets", stats->gets},
                {"promotions", stats->promotions},
                {"demotions", stats->demotions},
                {"evictions", stats->evictions},
                {"corrupt_records", stats->corrupt_records},
                {"bytes_in", stats->bytes_in},
                {"bytes_out", stats->bytes_out},
                {"requests", stats->requests},
                {"sessions", stats->sessions},
                {"uptime_seconds", stats->uptime_seconds},
                {"errors", errors},
                {"reuse", ReuseJson(stats->reuse)}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  fmt::print("{:<6} {:>10} {:>12} {:>12} {:>10} {:>10}\n", "tier", "segments", "bytes", "capacity",
             "hits", "misses");
  for (const auto& t : stats->tiers) {
    fmt::print("{:<6} {:>10} {:>12} {:>12} {:>10} {:>10}\n", TierName(t.tier), t.segments,
               HumanBytes(t.bytes), t.capacity_bytes ? HumanBytes(t.capacity_bytes) : "unlimited",
               t.hits, t.misses);
  }
  fmt::print("\nputs {}  gets {}  promotions {}  demotions {}  evictions {}  corrupt {}\n",
             stats->puts, stats->gets, stats->promotions, stats->demotions, stats->evictions,
             stats->corrupt_records);
  fmt::print("requests {}  sessions {}  in {}  out {}  uptime {:.1f} s\n", stats->requests,
             stats->sessions, HumanBytes(stats->bytes_in), HumanBytes(stats->bytes_out),
             stats->uptime_seconds);
  std::string errors;
  for (const auto& [code, n] : stats->errors)
    errors += fmt::format("  {} {}", ErrorCodeName(code), n);
  fmt::print("errors{}\n", errors.empty() ? "  none" : errors);
  PrintReuse(stats->reuse);
  return 0;
}

int List(Client& client, bool as_json) {
  std::vector<SegmentInfo> all;
  std::optional<SegmentKey> after;
  while (true) {
    auto page = client.List(after, 1000);
    if (!page.ok()) return Fail(page.status());
    all.insert(all.end(), page->segments.begin(), page->segments.end());
    if (!page->has_more || page->segments.empty()) break;
    after = page->segments.back().context_key;
  }
  if (as_json) {
    json out = json::array();
    for (const auto& s : all) out.push_back(InfoJson(s));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  fmt::print("{:<32}  {:>7} {:>6} {:>5} {:>5} {:<5} {:>10} {:<5} {:>8}\n", "context key", "tokens",
             "layers", "heads", "dim", "dtype", "bytes", "tier", "accesses");
  for (const auto& s : all) {
    fmt::print("{:<32}  {:>7} {:>6} {:>5} {:>5} {:<5} {:>10} {:<5} {:>8}\n", s.context_key.ToHex(),
               s.layout.tokens, s.layout.num_layers, s.layout.kv_heads, s.layout.head_dim,
               DTypeName(s.layout.dtype), HumanBytes(s.payload_bytes), TierName(s.tier),
               s.access_count);
  }
  fmt::print("{} segments in namespace '{}'\n", all.size(), client.options().name_space);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvcommctl: command-line client of kvcommd"};
  app.require_subcommand(1);
  ClientOptions options;
  options.client_name = "kvcommctl";
  options.endpoint = DefaultEndpoint();
  int timeout_ms = 10000;
  bool namespace_given = false;
  app.add_option("--endpoint", options.endpoint, "kvcommd endpoint")->capture_default_str();
  app.add_option("--namespace", options.name_space, "namespace to work in")
      ->capture_default_str()
      ->each([&](const std::string&) { namespace_given = true; });
  app.add_option("--timeout-ms", timeout_ms, "per-call timeout")->check(CLI::Range(1, 3'600'000));

  bool json_out = false, content_key = false;
  std::string file, key_hex, out_path;
  auto* ping = app.add_subcommand("ping", "check that kvcommd answers");
  auto* stats = app.add_subcommand("stats", "print daemon and tier statistics");
  stats->add_flag("--json", json_out, "machine-readable output");
  auto* anchors = app.add_subcommand("anchors", "list the KVCOMM anchor pools of the namespace");
  anchors->add_flag("--json", json_out, "machine-readable output");
  auto* ls = app.add_subcommand("ls", "list the segments of the namespace");
  ls->add_flag("--json", json_out, "machine-readable output");
  auto* put =
      app.add_subcommand("put", "store a segment file (safetensors); prints its context key last");
  put->add_option("FILE", file, "segment file")->required();
  auto* get = app.add_subcommand("get", "fetch a segment into a file that put accepts");
  get->add_option("KEY", key_hex, "context key (32 hex digits)")->required();
  get->add_option("OUT", out_path, "output file")->required();
  get->add_flag("--content", content_key, "KEY is a content key");
  auto* rm = app.add_subcommand("rm", "delete a segment");
  rm->add_option("KEY", key_hex, "context key (32 hex digits)")->required();
  CLI11_PARSE(app, argc, argv);
  options.timeout = std::chrono::milliseconds(timeout_ms);

  std::optional<SegmentFile> segment_file;
  if (put->parsed()) {
    auto read = ReadSegmentFile(file);
    if (!read.ok()) return Fail(read.status());
    segment_file = std::move(read).value();
    options.model = segment_file->fingerprint;  // writing needs the model
    if (segment_file->name_space && !namespace_given)
      options.name_space = *segment_file->name_space;
  }
  SegmentKey key;
  if (get->parsed() || rm->parsed()) {
    auto parsed = Hash128::FromHex(key_hex);
    if (!parsed.ok()) return Fail(parsed.status());
    key = *parsed;
  }

  auto connected = Client::Connect(options);
  if (!connected.ok()) return Fail(connected.status());
  Client& client = **connected;

  if (ping->parsed()) {
    auto start = std::chrono::steady_clock::now();
    if (Status s = client.Ping(); !s.ok()) return Fail(s);
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    fmt::print("pong from kvcommd at {} in {:.2f} ms\n", options.endpoint, ms);
    return 0;
  }
  if (stats->parsed()) return Stats(client, json_out);
  if (ls->parsed()) return List(client, json_out);
  if (anchors->parsed()) return Anchors(client, json_out);
  if (put->parsed()) {
    auto info = client.Put(segment_file->segment);
    if (!info.ok()) return Fail(info.status());
    fmt::print("stored {} tokens, {} layers, {} in namespace '{}' (tier {})\n", info->layout.tokens,
               info->layout.num_layers, HumanBytes(info->payload_bytes), info->name_space,
               TierName(info->tier));
    fmt::print("content key {}\n", info->content_key.ToHex());
    fmt::print("{}\n", info->context_key.ToHex());
    return 0;
  }
  if (get->parsed()) {
    auto segment = client.Get(key, content_key ? KeyKind::kContent : KeyKind::kContext);
    if (!segment.ok()) return Fail(segment.status());
    if (Status s = WriteSegmentFile(out_path, *segment); !s.ok()) return Fail(s);
    fmt::print("wrote {} tokens ({}) to {}\n", segment->info.layout.tokens,
               HumanBytes(segment->info.payload_bytes), out_path);
    return 0;
  }
  if (rm->parsed()) {
    if (Status s = client.Remove(key); !s.ok()) return Fail(s);
    fmt::print("removed {}\n", key.ToHex());
    return 0;
  }
  return 0;
}
