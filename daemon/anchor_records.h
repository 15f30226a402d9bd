// The anchor pools' bookkeeping on disk: one record per (namespace, model, slot) in the store's
// record table (kvstore/store.h), rewritten whenever the slot changes and read back when kvcommd
// starts, so the bases and deltas the pools refer to are not orphaned by a restart.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/keys.h"
#include "daemon/anchor_pool.h"

namespace kvcomm::daemon {

struct SlotRecord {
  std::string name_space;
  ModelFingerprint model;
  std::string slot;
  std::vector<AnchorSlot::Anchor> anchors;  // oldest first
};

inline constexpr std::string_view kSlotRecordPrefix = "anchor-slot\x1f";

std::string SlotRecordName(const std::string& name_space, const ModelFingerprint& model,
                           const std::string& slot);
// A versioned JSON document; Decode checks every field and names the bad one.
std::string EncodeSlotRecord(const SlotRecord& record);
Result<SlotRecord> DecodeSlotRecord(std::string_view bytes);

}  // namespace kvcomm::daemon
