// Validation of what agents send the anchor service (anchor_service.h).
#include <cmath>

#include "daemon/anchor_service.h"

namespace kvcomm::daemon {
namespace {

constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxBasePrefix = 4096;

Status ValidateName(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > kMaxNameBytes)
    return InvalidArgument("{} must have 1..{} bytes, got {}", what, kMaxNameBytes, name.size());
  // Printable ASCII: names are identifiers, shown by kvcommctl and kept in JSON records.
  for (char c : name)
    if (c < 0x20 || c > 0x7e)
      return InvalidArgument("{} '{}' has a byte outside printable ASCII", what, name);
  return Status::Ok();
}

Status ValidateTokens(const std::vector<int32_t>& tokens, std::string_view what) {
  if (tokens.empty() || tokens.size() > KvLayout::kMaxTokens)
    return InvalidArgument("{} must have 1..{} tokens, got {}", what, KvLayout::kMaxTokens,
                           tokens.size());
  return Status::Ok();
}

}  // namespace

Status ReuseModel::Validate() const {
  KVCOMM_RETURN_IF_ERROR(WithTokens(geometry, 1, geometry.dtype).Validate());
  if (geometry.head_dim % 2 != 0)
    return InvalidArgument("head dim must be even for RoPE, got {}", geometry.head_dim);
  if (inv_freq.size() != geometry.head_dim / 2) {
    return InvalidArgument("ropeInvFreq has {} entries, head dim {} needs {}", inv_freq.size(),
                           geometry.head_dim, geometry.head_dim / 2);
  }
  for (float f : inv_freq) {
    if (!std::isfinite(f) || f <= 0)
      return InvalidArgument("ropeInvFreq entries must be finite and positive, got {}", f);
  }
  if (base_prefix.size() > kMaxBasePrefix)
    return InvalidArgument("basePrefix has {} tokens, at most {}", base_prefix.size(),
                           kMaxBasePrefix);
  return Status::Ok();
}

Status PlanInput::Validate() const {
  KVCOMM_RETURN_IF_ERROR(ValidateName(agent, "agent name"));
  KVCOMM_RETURN_IF_ERROR(model.Validate());
  if (segments.empty() || segments.size() > kMaxPlanSegments)
    return InvalidArgument("a plan needs 1..{} segments, got {}", kMaxPlanSegments,
                           segments.size());
  uint64_t total = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    const auto& s = segments[i];
    KVCOMM_RETURN_IF_ERROR(ValidateTokens(s.tokens, fmt::format("segment {}", i)));
    if (s.placeholder)
      KVCOMM_RETURN_IF_ERROR(ValidateName(s.slot, fmt::format("segment {} slot", i)));
    total += s.tokens.size();
  }
  if (total > KvLayout::kMaxTokens)
    return InvalidArgument("a plan of {} tokens exceeds {}", total, KvLayout::kMaxTokens);
  return Status::Ok();
}

Status ActualInput::Validate() const {
  KVCOMM_RETURN_IF_ERROR(ValidateName(agent, "agent name"));
  KVCOMM_RETURN_IF_ERROR(ValidateName(slot, "slot"));
  KVCOMM_RETURN_IF_ERROR(model.Validate());
  KVCOMM_RETURN_IF_ERROR(ValidateTokens(placeholder_tokens, "placeholderTokens"));
  if (placeholder_position < 0 || following_position < 0)
    return InvalidArgument("positions must not be negative");
  const auto p_layout = WithTokens(model.geometry, placeholder_tokens.size(), model.geometry.dtype);
  if (placeholder_kv.size() != p_layout.PayloadBytes())
    return InvalidArgument("placeholder KV has {} bytes, {} needs {}", placeholder_kv.size(),
                           p_layout.ToString(), p_layout.PayloadBytes());
  if (following_tokens.empty()) {
    if (following_kv.size() != 0) return InvalidArgument("following KV without followingTokens");
    return Status::Ok();
  }
  const auto t_layout = WithTokens(model.geometry, following_tokens.size(), model.geometry.dtype);
  if (following_kv.size() != t_layout.PayloadBytes())
    return InvalidArgument("following KV has {} bytes, {} needs {}", following_kv.size(),
                           t_layout.ToString(), t_layout.PayloadBytes());
  return Status::Ok();
}

Status OfferInput::Validate() const {
  KVCOMM_RETURN_IF_ERROR(ValidateName(agent, "agent name"));
  KVCOMM_RETURN_IF_ERROR(ValidateName(slot, "slot"));
  KVCOMM_RETURN_IF_ERROR(model.Validate());
  return ValidateTokens(placeholder_tokens, "placeholderTokens");
}

Status CheckInput::Validate() const {
  KVCOMM_RETURN_IF_ERROR(ValidateName(agent, "agent name"));
  if (slots.empty() || slots.size() > kMaxPlanSegments)
    return InvalidArgument("a check names 1..{} slots, got {}", kMaxPlanSegments, slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    KVCOMM_RETURN_IF_ERROR(ValidateName(slots[i], fmt::format("slot {}", i)));
    for (size_t j = 0; j < i; ++j)
      if (slots[j] == slots[i]) return InvalidArgument("slot '{}' is named twice", slots[i]);
  }
  if (!std::isfinite(next_token_kl) || next_token_kl < 0)
    return InvalidArgument("nextTokenKl must be finite and >= 0, got {}", next_token_kl);
  return Status::Ok();
}

}  // namespace kvcomm::daemon
