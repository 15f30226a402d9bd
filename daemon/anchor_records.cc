#include "daemon/anchor_records.h"

#include <nlohmann/json.hpp>

namespace kvcomm::daemon {
namespace {

constexpr int kRecordVersion = 1;

Result<Hash128> KeyField(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return InvalidArgument("'{}' missing", field);
  auto key = Hash128::FromHex(it->get<std::string>());
  if (!key.ok()) return InvalidArgument("'{}': {}", field, key.status().message());
  return *key;
}

Result<std::string> StringField(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return InvalidArgument("'{}' missing", field);
  return it->get<std::string>();
}

Result<uint64_t> CountField(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_number_unsigned())
    return InvalidArgument("'{}' must be a non-negative integer", field);
  return it->get<uint64_t>();
}

}  // namespace

std::string SlotRecordName(const std::string& name_space, const ModelFingerprint& model,
                           const std::string& slot) {
  // Namespaces cannot hold the separator and the model is fixed-length hex, so names never
  // collide whatever the slot.
  return std::string(kSlotRecordPrefix) + name_space + "\x1f" + model.ToHex() + "\x1f" + slot;
}

std::string EncodeSlotRecord(const SlotRecord& record) {
  nlohmann::json anchors = nlohmann::json::array();
  for (const auto& a : record.anchors) {
    nlohmann::json deltas = nlohmann::json::object();
    for (const auto& [agent, d] : a.deltas)
      deltas[agent] = {{"placeholder", d.placeholder.ToHex()}, {"following", d.following.ToHex()}};
    anchors.push_back({{"base", a.base.ToHex()},
                       {"tokens", a.tokens},
                       {"activations", a.activations},
                       {"deltas", deltas}});
  }
  return nlohmann::json{{"version", kRecordVersion},
                        {"namespace", record.name_space},
                        {"model", record.model.ToHex()},
                        {"slot", record.slot},
                        {"anchors", anchors}}
      .dump();
}

Result<SlotRecord> DecodeSlotRecord(std::string_view bytes) {
  auto j = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("not a JSON object");
  KVCOMM_ASSIGN_OR_RETURN(uint64_t version, CountField(j, "version"));
  if (version != kRecordVersion)
    return InvalidArgument("record version {} (this kvcommd reads {})", version, kRecordVersion);
  SlotRecord record;
  KVCOMM_ASSIGN_OR_RETURN(record.name_space, StringField(j, "namespace"));
  KVCOMM_ASSIGN_OR_RETURN(record.model, KeyField(j, "model"));
  KVCOMM_ASSIGN_OR_RETURN(record.slot, StringField(j, "slot"));
  auto anchors = j.find("anchors");
  if (anchors == j.end() || !anchors->is_array()) return InvalidArgument("'anchors' missing");
  for (const auto& a : *anchors) {
    if (!a.is_object()) return InvalidArgument("an anchor is not an object");
    AnchorSlot::Anchor anchor;
    KVCOMM_ASSIGN_OR_RETURN(anchor.base, KeyField(a, "base"));
    KVCOMM_ASSIGN_OR_RETURN(uint64_t tokens, CountField(a, "tokens"));
    if (tokens == 0 || tokens > UINT32_MAX) return InvalidArgument("'tokens' out of range");
    anchor.tokens = static_cast<uint32_t>(tokens);
    KVCOMM_ASSIGN_OR_RETURN(anchor.activations, CountField(a, "activations"));
    auto deltas = a.find("deltas");
    if (deltas == a.end() || !deltas->is_object()) return InvalidArgument("'deltas' missing");
    for (const auto& [agent, d] : deltas->items()) {
      if (!d.is_object()) return InvalidArgument("deltas of '{}' are not an object", agent);
      AnchorSlot::AgentDeltas agent_deltas;
      KVCOMM_ASSIGN_OR_RETURN(agent_deltas.placeholder, KeyField(d, "placeholder"));
      KVCOMM_ASSIGN_OR_RETURN(agent_deltas.following, KeyField(d, "following"));
      anchor.deltas.emplace(agent, agent_deltas);
    }
    record.anchors.push_back(std::move(anchor));
  }
  return record;
}

}  // namespace kvcomm::daemon
