// What a compression request names: a method with parameters ("snapkv:window=32,kernel=7")
// and a budget ("128" tokens per layer and head, "25%" or "0.25" of the tokens, "1.5MiB").
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvcomm::kvstore::compress {

struct MethodSpec {
  std::string name;
  std::map<std::string, std::string> params;  // as written; methods parse and check them
};
// NAME[:KEY=VALUE[,KEY=VALUE]...]; names and keys are [a-z0-9_]; duplicates are refused.
Result<MethodSpec> ParseMethodSpec(std::string_view text);

struct Budget {
  enum class Kind { kNone, kTokens, kFraction, kBytes, kLoss };
  Kind kind = Kind::kNone;
  double value = 0;  // tokens per layer and head, a fraction in (0, 1], bytes, or a loss
};
// "" (none), "128" (tokens), "25%" or "0.25" (fraction), "4096B", "64KiB", "1.5MiB", "2MB",
// "loss=0.05" (calibrated: the fewest tokens whose estimated loss stays under 0.05).
Result<Budget> ParseBudget(std::string_view text);

// Reads an integer / a number parameter of a method, with a default and a range.
Result<int64_t> IntParam(const MethodSpec& spec, const std::string& key, int64_t fallback,
                         int64_t min, int64_t max);
Result<double> NumberParam(const MethodSpec& spec, const std::string& key, double fallback,
                           double min, double max);
Result<std::string> ChoiceParam(const MethodSpec& spec, const std::string& key,
                                const std::string& fallback,
                                std::initializer_list<std::string_view> choices);
// Refuses parameters not in `known`, naming the method and the parameter.
Status CheckParams(const MethodSpec& spec, std::initializer_list<std::string_view> known);

}  // namespace kvcomm::kvstore::compress
