// pipeline_bench: time to first token (TTFT) of the agents of a fully connected pipeline, full
// prefill (dense) vs KVCOMM reuse (kvcomm), side by side in one run, on random weights.
//   pipeline_bench --device cuda --shape llama3-8b     the issue's setting: 5 agents, 2 rounds,
//                                                      1024-token input, 512-token agent
//                                                      prefixes, 512-token replies, bf16
//   pipeline_bench --device cpu --shape tiny-20m --input-tokens 96 --prefix-tokens 32
//                  --output-tokens 16                  a quick check of the same code on CPU
//
// Workload: agent i's prompt is BOS + its own prefix (a system prompt) + a label + the shared
// input, and in round 2 also, per other agent, a label + that agent's round-1 reply; a short cue
// ends it. Replies are generated greedily, output-tokens each.
//   dense:  every turn prefills its whole prompt.
//   kvcomm: the KVCOMM path with the kernels kvcommd runs (kernels/realign.h), executed in this
//           process on the same device, without the daemon's transport: the agent's own prefix
//           is an exact hit (its KV kept since its first turn); each placeholder (the input, the
//           replies) is base(P) (P's KV after BOS + a 4-token lead-in: a reply's computed by
//           its author after its turn, the input's by its first reader inside that reader's
//           TTFT; --bases-by reader makes readers compute replies' too) re-rotated to its offset
//           plus the weighted deltas of the slot's anchors for this agent; the label after a
//           placeholder is the agent's cached copy plus per-channel weighted deltas; only the
//           cue is prefilled over the imported KV. The anchor pools hold random KV: with random
//           weights anchor values mean nothing, and the work per turn (distances, weights,
//           realignment, import, gaps) does not depend on them; the reuse decision is computed and
//           then forced to reuse.
// TTFT counts from the turn's start to the first reply token's logits on the host, cache
// allocation excluded in both modes.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "agents/runtime/model.h"
#include "agents/runtime/weights.h"
#include "bench/greedy_turns.h"
#include "bench/model_shapes.h"
#include "kernels/realign.h"
#if KVCOMM_HAVE_CUDA
#include "kernels/cuda/launchers.h"
#endif

using namespace kvcomm;
using namespace kvcomm::runtime;
using Clock = std::chrono::steady_clock;

namespace {

void Check(const Status& s) { bench::ExitOnError("pipeline_bench", s); }
template <typename T>
T Check(Result<T> r) {
  Check(r.status());
  return std::move(r).value();
}
#if KVCOMM_HAVE_CUDA
void CheckCuda(cudaError_t e) {
  if (e != cudaSuccess) Check(Error(ErrorCode::kInternal, "CUDA: {}", cudaGetErrorString(e)));
}
#endif

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// KV buffers in the cache's native dtype: fp32 host memory on CPU, bf16 device memory on CUDA.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Device device, size_t bytes) {
    if (device == Device::kCpu) {
      host_.resize(bytes);
    } else {
      device_ = Check(kernels::DeviceBuffer::Allocate(bytes));
    }
  }
  std::byte* data() { return host_.empty() ? device_.data() : host_.data(); }
  const std::byte* data() const { return host_.empty() ? device_.data() : host_.data(); }

 private:
  std::vector<std::byte> host_;
  kernels::DeviceBuffer device_;
};

// The operations of the reuse path on either backend (kernels/realign.h), with scratch buffers
// allocated once (as kvcommd's arenas would be) so that no turn pays for allocations. Distances
// and weights stay where the realignment runs; only the per-token sums the reuse decision needs
// come back to the host.
class Ops {
 public:
  Ops(Device device, int64_t max_tokens, int64_t anchors, int64_t channels,
      std::span<const float> inv_freq)
      : device_(device) {
    const int64_t columns = std::max(max_tokens, channels);
    auto buffer = [&](size_t bytes) { return Buffer(device, bytes); };
    sums_ = buffer(anchors * std::max(max_tokens * 3, channels) * 4);
    key_weights_ = buffer(anchors * columns * 4);
    value_weights_ = buffer(anchors * columns * 4);
    from_ = buffer(max_tokens * 4);
    to_ = buffer(max_tokens * 4);
    freq_ = buffer(inv_freq.size_bytes());
    Copy(freq_, inv_freq.data(), inv_freq.size_bytes());
  }

  void FillRandom(Buffer& b, int64_t elements, uint64_t seed) const {
    if (device_ == Device::kCpu) {
      std::mt19937_64 rng(seed);
      std::normal_distribution<float> normal(0.f, 0.5f);
      float* x = reinterpret_cast<float*>(b.data());
      for (int64_t i = 0; i < elements; ++i) x[i] = normal(rng);
      return;
    }
#if KVCOMM_HAVE_CUDA
    CheckCuda(kernels::cuda::LaunchFillRandom(Bf16(b), elements, seed, 0.5f, 0.f, nullptr));
#endif
  }

  // A placeholder: per-token distances to the anchors, returned (for the reuse decision), and
  // per-token key and value weights, kept for Realign.
  std::vector<float> TokenDistancesAndWeights(const kernels::RealignShape& s, const Buffer& base,
                                              const Buffer& anchors) {
    const float scale = 1.f / static_cast<float>(s.layers * s.kv_heads * s.head_dim);
    std::vector<float> sums(s.anchors * s.tokens * 3);
    same_weights_ = false;
    if (device_ == Device::kCpu) {
      kernels::cpu::AnchorDistances(s, F32(base), F32(anchors), sums.data());
      kernels::cpu::SoftmaxOverAnchors(sums.data(), s.anchors, s.tokens, 3, 0, scale, false,
                                       kTemperature, F32(key_weights_));
      kernels::cpu::SoftmaxOverAnchors(sums.data(), s.anchors, s.tokens, 3, 1, scale, false,
                                       kTemperature, F32(value_weights_));
      return sums;
    }
#if KVCOMM_HAVE_CUDA
    namespace cu = kernels::cuda;
    CheckCuda(cu::LaunchAnchorDistances(s.layers, s.kv_heads, s.tokens, s.head_dim, s.anchors,
                                        Bf16(base), Bf16(anchors), F32(sums_), nullptr));
    CheckCuda(cu::LaunchSoftmaxOverAnchors(F32(sums_), s.anchors, s.tokens, 3, 0, scale, false,
                                           kTemperature, F32(key_weights_), nullptr));
    CheckCuda(cu::LaunchSoftmaxOverAnchors(F32(sums_), s.anchors, s.tokens, 3, 1, scale, false,
                                           kTemperature, F32(value_weights_), nullptr));
    Check(kernels::CopyDeviceToHost(sums.data(), sums_.data(), sums.size() * 4));
#endif
    return sums;
  }

  // The template segment after a placeholder: per-channel weights from the placeholder's base,
  // the same for keys and values (FollowingSegmentWeights in daemon/anchor_pool.h).
  void ChannelWeights(const kernels::RealignShape& s, const Buffer& base, const Buffer& anchors) {
    const int64_t channels = s.Channels();
    same_weights_ = true;
    if (device_ == Device::kCpu) {
      kernels::cpu::AnchorChannelDistances(s, F32(base), F32(anchors), F32(sums_));
      kernels::cpu::SoftmaxOverAnchors(F32(sums_), s.anchors, channels, 1, 0, 1.f, true,
                                       kTemperature, F32(key_weights_));
      return;
    }
#if KVCOMM_HAVE_CUDA
    namespace cu = kernels::cuda;
    CheckCuda(cu::LaunchAnchorChannelDistances(s.layers, s.kv_heads, s.tokens, s.head_dim,
                                               s.anchors, Bf16(base), Bf16(anchors), F32(sums_),
                                               nullptr));
    CheckCuda(cu::LaunchSoftmaxOverAnchors(F32(sums_), s.anchors, channels, 1, 0, 1.f, true,
                                           kTemperature, F32(key_weights_), nullptr));
#endif
  }

  // Realigns `base` with the weights computed last into `out`.
  void Realign(const kernels::RealignShape& s, const Buffer& base, std::span<const int32_t> from,
               std::span<const int32_t> to, const Buffer& deltas, Buffer& out) {
    const Buffer& value_weights = same_weights_ ? key_weights_ : value_weights_;
    if (device_ == Device::kCpu) {
      kernels::cpu::RealignKv(s, F32(base), from, to, std::span(F32(freq_), s.head_dim / 2),
                              F32(deltas), F32(key_weights_), F32(value_weights), F32(out));
      return;
    }
#if KVCOMM_HAVE_CUDA
    Copy(from_, from.data(), from.size_bytes());
    Copy(to_, to.data(), to.size_bytes());
    CheckCuda(kernels::cuda::LaunchRealignKv(
        s.layers, s.kv_heads, s.tokens, s.head_dim, s.anchors, s.first_blended_layer,
        s.per_channel_weights, Bf16(base), reinterpret_cast<const int32_t*>(from_.data()),
        reinterpret_cast<const int32_t*>(to_.data()), F32(freq_), Bf16(deltas), F32(key_weights_),
        F32(value_weights), Bf16(out), nullptr));
#endif
  }

 private:
  static constexpr float kTemperature = 0.1f;  // kvcommd's default (anchors.temperature)

  void Copy(Buffer& to, const void* from, size_t bytes) const {
    if (device_ == Device::kCpu) {
      std::memcpy(to.data(), from, bytes);
    } else {
      Check(kernels::CopyHostToDevice(to.data(), from, bytes));
    }
  }
  static float* F32(Buffer& b) { return reinterpret_cast<float*>(b.data()); }
  static const float* F32(const Buffer& b) { return reinterpret_cast<const float*>(b.data()); }
#if KVCOMM_HAVE_CUDA
  static kernels::cuda::bf16* Bf16(Buffer& b) {
    return reinterpret_cast<kernels::cuda::bf16*>(b.data());
  }
  static const kernels::cuda::bf16* Bf16(const Buffer& b) {
    return reinterpret_cast<const kernels::cuda::bf16*>(b.data());
  }
#endif

  Device device_;
  bool same_weights_ = false;  // per-channel weights serve keys and values
  Buffer sums_, key_weights_, value_weights_, from_, to_, freq_;
};

struct Span {
  std::vector<int32_t> tokens;
  std::string slot;  // placeholders: "input" or "reply.<agent>"; empty: template text
  bool own_prefix = false;
};

// Where a kvcomm turn's TTFT goes.
enum Phase { kExact, kBases, kWeights, kRealign, kPrefill, kPhases };
constexpr const char* kPhaseNames[kPhases] = {"exact import", "bases", "distances + weights",
                                              "realign + import", "prefill of the rest"};

struct TurnTiming {
  double ttft = 0, decode = 0, after = 0;  // after: storing bases of the reply (author mode)
  double phases[kPhases] = {};
  int64_t prompt_tokens = 0, reused_tokens = 0;
  std::vector<int32_t> reply;
};

class Bench {
 public:
  struct Options {
    bool author_bases = false;  // the author stores base(reply) after its turn
    int agents = 5, rounds = 2, anchors = 2;
    int64_t input_tokens = 1024, prefix_tokens = 512, output_tokens = 512, label_tokens = 8;
  };

  Bench(const Model& model, Options o)
      : model_(model),
        o_(o),
        ops_(model.device(), std::max(o.input_tokens, o.output_tokens), o.anchors,
             int64_t{model.config().num_layers} * 2 * model.config().num_kv_heads *
                 model.config().head_dim,
             model.config().RopeInverseFrequencies()) {
    const auto& c = model.config();
    std::mt19937_64 rng(7);
    auto random_tokens = [&](int64_t n) {
      std::vector<int32_t> t(n);
      for (auto& x : t) x = 3 + static_cast<int32_t>(rng() % (c.vocab_size - 3));
      return t;
    };
    for (int i = 0; i < o.agents; ++i) prefixes_.push_back(random_tokens(o.prefix_tokens));
    input_ = random_tokens(o.input_tokens);
    label_input_ = random_tokens(o.label_tokens);
    label_reply_ = random_tokens(o.label_tokens);
    cue_ = random_tokens(o.label_tokens);
    lead_in_ = random_tokens(4);
    scratch_ =
        Buffer(model.device(), Layout(std::max(o.input_tokens, o.output_tokens)).PayloadBytes());
    // Anchor pools: per slot, A anchor bases; per slot and agent, A placeholder deltas, the
    // agent's cached copy of the template segment after the placeholder and its A deltas.
    uint64_t seed = 100;
    auto random = [&](int64_t tokens, int64_t copies) {
      Buffer b(model.device(), Layout(tokens).PayloadBytes() * copies);
      ops_.FillRandom(b, Layout(tokens).PayloadBytes() / DTypeSize(Native()) * copies, seed++);
      return b;
    };
    auto pool = [&](const std::string& slot, int64_t tokens) {
      anchor_bases_.emplace(slot, random(tokens, o.anchors));
      for (int i = 0; i < o.agents; ++i) {
        const std::string key = slot + "@" + std::to_string(i);
        deltas_.emplace(key, random(tokens, o.anchors));
        following_bases_.emplace(key, random(o.label_tokens, 1));
        following_deltas_.emplace(key, random(o.label_tokens, o.anchors));
      }
    };
    pool("input", o.input_tokens);
    for (int j = 0; j < o.agents; ++j) pool("reply." + std::to_string(j), o.output_tokens);
  }

  // One whole pipeline run (all rounds) in a mode: timings [round][agent].
  std::vector<std::vector<TurnTiming>> Run(bool kvcomm) {
    own_prefix_.clear();
    bases_.clear();
    std::vector<std::vector<TurnTiming>> rounds;
    std::vector<std::vector<int32_t>> replies(o_.agents);
    for (int r = 0; r < o_.rounds; ++r) {
      std::vector<TurnTiming> turns;
      for (int i = 0; i < o_.agents; ++i) {
        std::vector<Span> prompt = {{{}, "", true}, {input_, "input", false}};
        prompt[0].tokens.push_back(model_.config().bos_token_id >= 0 ? model_.config().bos_token_id
                                                                     : 1);
        prompt[0].tokens.insert(prompt[0].tokens.end(), prefixes_[i].begin(), prefixes_[i].end());
        prompt[0].tokens.insert(prompt[0].tokens.end(), label_input_.begin(), label_input_.end());
        if (r > 0)
          for (int j = 0; j < o_.agents; ++j) {
            if (j == i) continue;
            prompt.push_back({label_reply_, "", false});
            prompt.push_back({replies[j], "reply." + std::to_string(j), false});
          }
        prompt.push_back({cue_, "", false});
        turns.push_back(kvcomm ? ReuseTurn(prompt, i) : DenseTurn(prompt));
        if (kvcomm && o_.author_bases && r + 1 < o_.rounds) {
          const auto start = Clock::now();
          Base({turns.back().reply, "reply." + std::to_string(i), false});
          turns.back().after = Seconds(start);
        }
      }
      for (int i = 0; i < o_.agents; ++i) replies[i] = turns[i].reply;
      rounds.push_back(std::move(turns));
    }
    return rounds;
  }

 private:
  KvLayout Layout(int64_t tokens) const {
    const auto& c = model_.config();
    return {static_cast<uint32_t>(c.num_layers), static_cast<uint32_t>(c.num_kv_heads),
            static_cast<uint32_t>(tokens), static_cast<uint32_t>(c.head_dim), Native()};
  }
  DType Native() const { return model_.device() == Device::kCpu ? DType::kF32 : DType::kBF16; }
  kernels::RealignShape Shape(int64_t tokens) const {
    const auto& c = model_.config();
    return {c.num_layers, c.num_kv_heads, tokens, c.head_dim, o_.anchors};
  }

  static int64_t Length(const std::vector<Span>& prompt) {
    int64_t n = 0;
    for (const auto& s : prompt) n += static_cast<int64_t>(s.tokens.size());
    return n;
  }

  TurnTiming DenseTurn(const std::vector<Span>& prompt) {
    TurnTiming turn;
    std::vector<int32_t> tokens;
    for (const auto& s : prompt) tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
    turn.prompt_tokens = static_cast<int64_t>(tokens.size());
    auto dense = Check(bench::DenseTurn(model_, tokens, o_.output_tokens));
    turn.ttft = dense.ttft;
    turn.decode = dense.decode;
    turn.reply = std::move(dense.reply);
    return turn;
  }

  // base(P): P's KV after BOS + the lead-in, computed by its first reader.
  const Buffer& Base(const Span& span) {
    auto it = bases_.find(span.slot);
    if (it != bases_.end()) return it->second;
    const int64_t lead = 1 + static_cast<int64_t>(lead_in_.size());
    std::vector<int32_t> tokens = {1};
    tokens.insert(tokens.end(), lead_in_.begin(), lead_in_.end());
    tokens.insert(tokens.end(), span.tokens.begin(), span.tokens.end());
    auto scratch = Check(model_.NewCache(static_cast<int64_t>(tokens.size())));
    Check(model_.Forward(tokens, scratch).status());
    Buffer base(model_.device(), Layout(static_cast<int64_t>(span.tokens.size())).PayloadBytes());
    Check(scratch.CopyOut(lead, static_cast<int64_t>(tokens.size()), base.data()));
    return bases_.emplace(span.slot, std::move(base)).first->second;
  }

  // KVCOMM's reuse decision from the value distances (kvcommd's DecideReuse): counted only.
  void Decide(const std::vector<float>& sums, int64_t tokens) {
    std::vector<double> distance(o_.anchors, 0.0);
    for (int64_t a = 0; a < o_.anchors; ++a) {
      for (int64_t t = 0; t < tokens; ++t) distance[a] += sums[(a * tokens + t) * 3 + 2];
      distance[a] = std::sqrt(distance[a]);
    }
    const double lowest = *std::min_element(distance.begin(), distance.end());
    double total = 0, entropy = 0;
    for (double d : distance) total += std::exp(-(d - lowest));
    for (double d : distance) {
      const double w = std::exp(-(d - lowest)) / total;
      if (w > 0) entropy -= w * std::log2(w);
    }
    ++decisions;
    would_prefill += o_.anchors < 2 || entropy > 0.3 * std::log2(double(o_.anchors));
  }

  void Place(KvCache& cache, int64_t tokens, int64_t position, const Buffer& kv) {
    Check(cache.Import(Layout(tokens), std::span(kv.data(), Layout(tokens).PayloadBytes()),
                       position));
  }

  TurnTiming ReuseTurn(const std::vector<Span>& prompt, int agent) {
    TurnTiming turn;
    turn.prompt_tokens = Length(prompt);
    auto cache = Check(model_.NewCache(turn.prompt_tokens + o_.output_tokens));
    const int64_t base_position = 1 + static_cast<int64_t>(lead_in_.size());
    auto positions = [](int64_t first, int64_t n) {
      std::vector<int32_t> p(n);
      for (int64_t t = 0; t < n; ++t) p[t] = static_cast<int32_t>(first + t);
      return p;
    };
    const auto start = Clock::now();
    auto lap = Clock::now();
    auto phase = [&](Phase p) {  // charges the time since the last call to `p`
      turn.phases[p] += Seconds(lap);
      lap = Clock::now();
    };
    std::vector<bool> imported(prompt.size(), false);
    int64_t position = 0;
    for (size_t s = 0; s < prompt.size(); ++s) {
      const Span& span = prompt[s];
      const int64_t n = static_cast<int64_t>(span.tokens.size());
      if (span.own_prefix && own_prefix_.contains(agent)) {
        Place(cache, n, position, own_prefix_.at(agent));  // exact: stored on its first turn
        phase(kExact);
        imported[s] = true;
      } else if (!span.slot.empty()) {
        // A placeholder: base(P) moved here plus the per-token weighted anchor deltas.
        const Buffer& base = Base(span);
        phase(kBases);
        const kernels::RealignShape shape = Shape(n);
        Decide(ops_.TokenDistancesAndWeights(shape, base, anchor_bases_.at(span.slot)), n);
        phase(kWeights);
        ops_.Realign(shape, base, positions(base_position, n), positions(position, n),
                     deltas_.at(span.slot + "@" + std::to_string(agent)), scratch_);
        Place(cache, n, position, scratch_);
        phase(kRealign);
        imported[s] = true;
      } else if (s > 0 && !prompt[s - 1].slot.empty() && s + 1 < prompt.size()) {
        // The template segment after a placeholder (not the prompt's last): the agent's cached
        // copy moved here plus per-channel weighted deltas of the same anchors.
        const Span& placeholder = prompt[s - 1];
        const int64_t p_tokens = static_cast<int64_t>(placeholder.tokens.size());
        ops_.ChannelWeights(Shape(p_tokens), Base(placeholder), anchor_bases_.at(placeholder.slot));
        phase(kWeights);
        kernels::RealignShape shape = Shape(n);
        shape.per_channel_weights = true;
        const std::string key = placeholder.slot + "@" + std::to_string(agent);
        ops_.Realign(shape, following_bases_.at(key), positions(2 * turn.prompt_tokens, n),
                     positions(position, n), following_deltas_.at(key), scratch_);
        Place(cache, n, position, scratch_);
        phase(kRealign);
        imported[s] = true;
      }
      if (imported[s]) turn.reused_tokens += n;
      position += n;
    }
    // The spans not imported, in order (each Forward starts at the first position without KV).
    std::vector<float> logits;
    for (size_t s = 0; s < prompt.size(); ++s)
      if (!imported[s]) logits = Check(model_.Forward(prompt[s].tokens, cache));
    phase(kPrefill);
    turn.ttft = Seconds(start);
    if (!own_prefix_.contains(agent)) {  // stored after the turn, as agents store segments
      const int64_t n = static_cast<int64_t>(prompt[0].tokens.size());
      Buffer kept(model_.device(), Layout(n).PayloadBytes());
      Check(cache.CopyOut(0, n, kept.data()));
      own_prefix_.emplace(agent, std::move(kept));
    }
    turn.reply = Check(bench::GreedyReply(model_, logits, cache, o_.output_tokens, &turn.decode));
    return turn;
  }

  const Model& model_;
  Options o_;
  Ops ops_;
  Buffer scratch_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::vector<int32_t> input_, label_input_, label_reply_, cue_, lead_in_;
  std::map<std::string, Buffer> anchor_bases_, deltas_, following_bases_, following_deltas_, bases_;
  std::map<int, Buffer> own_prefix_;

 public:
  int64_t decisions = 0, would_prefill = 0;  // KVCOMM's entropy rule on the random anchors
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pipeline_bench: TTFT of fully connected agents, dense vs KVCOMM reuse"};
  std::string device = "cuda", shape = "llama3-8b", json_path;
  Bench::Options o;
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--shape", shape, "llama3-8b or tiny-20m (random weights)");
  app.add_option("--agents", o.agents, "agents, all reading each other")->check(CLI::Range(2, 16));
  app.add_option("--rounds", o.rounds, "rounds (replies are read from round 2 on)")
      ->check(CLI::Range(1, 8));
  app.add_option("--anchors", o.anchors, "anchors blended per placeholder")
      ->check(CLI::Range(1, 16));
  app.add_option("--input-tokens", o.input_tokens, "shared input")->check(CLI::Range(8, 65536));
  app.add_option("--prefix-tokens", o.prefix_tokens, "each agent's own prefix")
      ->check(CLI::Range(1, 65536));
  app.add_option("--output-tokens", o.output_tokens, "reply length")->check(CLI::Range(1, 8192));
  std::string bases_by = "author";
  app.add_option("--bases-by", bases_by,
                 "who computes a reply's base KV: its author, right after its turn (what "
                 "agents/pipeline does), or its first reader, inside that reader's TTFT")
      ->check(CLI::IsMember({"reader", "author"}));
  app.add_option("--json", json_path, "write the timings here");
  CLI11_PARSE(app, argc, argv);

  o.author_bases = bases_by == "author";
  const ModelConfig config = bench::Shape(shape);
  const bool cuda = device == "cuda";
  const auto load_start = Clock::now();
  auto model = Check(cuda ? Model::RandomOnGpu(config, 1)
                          : Model::FromWeights(config, RandomWeights(config, 1), Device::kCpu));
  std::printf(
      "pipeline_bench: %s (%.2fB parameters, %s, random weights) on %s, loaded in %.1f s\n"
      "%d agents fully connected, %d rounds; input %lld tokens, prefixes %lld, replies %lld, "
      "%d anchors per placeholder; bases of replies computed by their %s\n",
      shape.c_str(), bench::Parameters(config) / 1e9, cuda ? "bf16" : "fp32",
      cuda ? kernels::CudaDeviceDescription().c_str() : "CPU", Seconds(load_start), o.agents,
      o.rounds, static_cast<long long>(o.input_tokens), static_cast<long long>(o.prefix_tokens),
      static_cast<long long>(o.output_tokens), o.anchors, bases_by.c_str());
  Bench bench(*model, o);
  Check(bench::WarmUp(*model));
  const auto dense = bench.Run(false);
  const auto kvcomm = bench.Run(true);

  nlohmann::json out = {{"shape", shape}, {"device", device}, {"rounds", nlohmann::json::array()}};
  double dense_total = 0, kvcomm_total = 0, dense_ttft = 0, kvcomm_ttft = 0;
  for (int r = 0; r < o.rounds; ++r) {
    std::printf("\nround %d%s\n%-7s %8s %8s %11s %11s %8s %11s %11s\n", r + 1,
                r == 0 ? " (nothing read from other agents yet)" : "", "agent", "prompt", "reused",
                "dense TTFT", "kvcomm TTFT", "speedup", "dense e2e", "kvcomm e2e");
    nlohmann::json agents = nlohmann::json::array();
    double round_dense = 0, round_kvcomm = 0;
    for (int i = 0; i < o.agents; ++i) {
      const TurnTiming& d = dense[r][i];
      const TurnTiming& k = kvcomm[r][i];
      std::printf("%-7d %8lld %7.1f%% %8.1f ms %8.1f ms %7.2fx %9.0f ms %9.0f ms\n", i,
                  static_cast<long long>(d.prompt_tokens),
                  100.0 * k.reused_tokens / k.prompt_tokens, 1e3 * d.ttft, 1e3 * k.ttft,
                  d.ttft / k.ttft, 1e3 * (d.ttft + d.decode), 1e3 * (k.ttft + k.decode + k.after));
      round_dense += d.ttft + d.decode;
      round_kvcomm += k.ttft + k.decode + k.after;
      dense_ttft += d.ttft;
      kvcomm_ttft += k.ttft;
      agents.push_back({{"prompt_tokens", d.prompt_tokens},
                        {"reused_tokens", k.reused_tokens},
                        {"dense_ttft_ms", 1e3 * d.ttft},
                        {"kvcomm_ttft_ms", 1e3 * k.ttft},
                        {"dense_decode_ms", 1e3 * d.decode},
                        {"kvcomm_decode_ms", 1e3 * k.decode},
                        {"kvcomm_after_turn_ms", 1e3 * k.after}});
    }
    std::printf("round %d end to end: dense %.2f s, kvcomm %.2f s (%.2fx)\n", r + 1, round_dense,
                round_kvcomm, round_dense / round_kvcomm);
    std::printf("kvcomm TTFT by phase, mean over agents:");
    for (int p = 0; p < kPhases; ++p) {
      double total = 0;
      for (int i = 0; i < o.agents; ++i) total += kvcomm[r][i].phases[p];
      std::printf("%s %s %.1f ms", p ? "," : "", kPhaseNames[p], 1e3 * total / o.agents);
    }
    std::printf("\n");
    dense_total += round_dense;
    kvcomm_total += round_kvcomm;
    out["rounds"].push_back(agents);
  }
  std::printf(
      "\nKVCOMM's reuse rule on the (random) anchors: %lld of %lld placeholders would "
      "have been prefilled; all were realigned (timing only)\n",
      static_cast<long long>(bench.would_prefill), static_cast<long long>(bench.decisions));
  std::printf(
      "\nall turns: mean TTFT dense %.1f ms, kvcomm %.1f ms (%.2fx); end to end %.2f s vs "
      "%.2f s (%.2fx)\n",
      1e3 * dense_ttft / (o.rounds * o.agents), 1e3 * kvcomm_ttft / (o.rounds * o.agents),
      dense_ttft / kvcomm_ttft, dense_total, kvcomm_total, dense_total / kvcomm_total);
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(1) << "\n";
  return 0;
}
