#include "kvstore/compress/spec.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace kvcomm::kvstore::compress {
namespace {

bool IsWord(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

Result<double> Number(std::string_view text, std::string_view what) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value))
    return InvalidArgument("{} '{}' is not a number", what, text);
  return value;
}

}  // namespace

Result<MethodSpec> ParseMethodSpec(std::string_view text) {
  text = Trim(text);
  MethodSpec spec;
  const size_t colon = text.find(':');
  spec.name = std::string(text.substr(0, colon));
  if (!IsWord(spec.name))
    return InvalidArgument("method '{}': a method name is [a-z0-9_]+ (e.g. snapkv:window=32)",
                           text);
  if (colon == std::string_view::npos) return spec;
  std::string_view rest = text.substr(colon + 1);
  while (true) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || !IsWord(item.substr(0, eq)) || eq + 1 == item.size())
      return InvalidArgument("method '{}': parameter '{}' is not KEY=VALUE", spec.name, item);
    std::string key(item.substr(0, eq));
    if (!spec.params.emplace(key, std::string(item.substr(eq + 1))).second)
      return InvalidArgument("method '{}': parameter '{}' given twice", spec.name, key);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return spec;
}

Result<Budget> ParseBudget(std::string_view text) {
  text = Trim(text);
  Budget budget;
  if (text.empty()) return budget;
  if (text.starts_with("loss=")) {
    KVCOMM_ASSIGN_OR_RETURN(double loss, Number(text.substr(5), "budget loss"));
    if (loss <= 0 || loss >= 1)
      return InvalidArgument("budget '{}': the loss must be in (0, 1)", text);
    return Budget{Budget::Kind::kLoss, loss};
  }
  static constexpr std::pair<std::string_view, double> kUnits[] = {{"GiB", 1024.0 * 1024 * 1024},
                                                                   {"MiB", 1024.0 * 1024},
                                                                   {"KiB", 1024.0},
                                                                   {"GB", 1e9},
                                                                   {"MB", 1e6},
                                                                   {"KB", 1e3},
                                                                   {"B", 1.0}};
  for (const auto& [unit, factor] : kUnits) {
    if (text.size() > unit.size() && text.ends_with(unit)) {
      KVCOMM_ASSIGN_OR_RETURN(double n,
                              Number(text.substr(0, text.size() - unit.size()), "budget"));
      if (n <= 0) return InvalidArgument("budget '{}' must be positive", text);
      budget.kind = Budget::Kind::kBytes;
      budget.value = std::floor(n * factor);
      return budget;
    }
  }
  if (text.ends_with('%')) {
    KVCOMM_ASSIGN_OR_RETURN(double pct, Number(text.substr(0, text.size() - 1), "budget"));
    if (pct <= 0 || pct > 100) return InvalidArgument("budget '{}' must be in (0%, 100%]", text);
    return Budget{Budget::Kind::kFraction, pct / 100};
  }
  KVCOMM_ASSIGN_OR_RETURN(double n, Number(text, "budget"));
  if (text.find('.') != std::string_view::npos) {
    if (n <= 0 || n > 1) return InvalidArgument("budget fraction '{}' must be in (0, 1]", text);
    return Budget{Budget::Kind::kFraction, n};
  }
  if (n < 1) return InvalidArgument("budget '{}' must be at least 1 token", text);
  return Budget{Budget::Kind::kTokens, n};
}

Result<int64_t> IntParam(const MethodSpec& spec, const std::string& key, int64_t fallback,
                         int64_t min, int64_t max) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) return fallback;
  int64_t value = 0;
  const std::string& text = it->second;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    return InvalidArgument("method '{}': {}={} is not an integer", spec.name, key, text);
  if (value < min || value > max)
    return InvalidArgument("method '{}': {}={} is not in [{}, {}]", spec.name, key, value, min,
                           max);
  return value;
}

Result<double> NumberParam(const MethodSpec& spec, const std::string& key, double fallback,
                           double min, double max) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) return fallback;
  auto value = Number(it->second, fmt::format("method '{}': {}", spec.name, key));
  if (!value.ok()) return value.status();
  if (*value < min || *value > max)
    return InvalidArgument("method '{}': {}={} is not in [{}, {}]", spec.name, key, it->second, min,
                           max);
  return *value;
}

Result<std::string> ChoiceParam(const MethodSpec& spec, const std::string& key,
                                const std::string& fallback,
                                std::initializer_list<std::string_view> choices) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) return fallback;
  if (std::find(choices.begin(), choices.end(), it->second) == choices.end())
    return InvalidArgument("method '{}': {}={} is not one of {}", spec.name, key, it->second,
                           fmt::join(choices, ", "));
  return it->second;
}

Status CheckParams(const MethodSpec& spec, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : spec.params)
    if (std::find(known.begin(), known.end(), key) == known.end())
      return InvalidArgument(
          "method '{}' has no parameter '{}' (it takes: {})", spec.name, key,
          known.size() ? fmt::format("{}", fmt::join(known, ", ")) : std::string("none"));
  return Status();
}

}  // namespace kvcomm::kvstore::compress
