// The anchor pools' records: a round trip keeps every field, and damaged or foreign documents
// are refused with the bad field named.
#include "daemon/anchor_records.h"

#include <gtest/gtest.h>

namespace kvcomm::daemon {
namespace {

SlotRecord Sample() {
  SlotRecord record{"ns", Hash128{1, 2}, "fact_relay.0/message.2", {}};
  AnchorSlot::Anchor a{Hash128{3, 4}, 12, 7, {}};
  a.deltas["fact_relay.0/reporter.1"] = {Hash128{5, 6}, Hash128{7, 8}};
  a.deltas["fact_relay.0/answerer.3"] = {Hash128{9, 10}, Hash128{}};
  record.anchors.push_back(a);
  record.anchors.push_back({Hash128{11, 12}, 3, 0, {}});
  return record;
}

TEST(AnchorRecords, RoundTripKeepsEveryField) {
  const SlotRecord record = Sample();
  auto back = DecodeSlotRecord(EncodeSlotRecord(record));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->name_space, "ns");
  EXPECT_EQ(back->model, record.model);
  EXPECT_EQ(back->slot, record.slot);
  ASSERT_EQ(back->anchors.size(), 2u);
  EXPECT_EQ(back->anchors[0].base, record.anchors[0].base);
  EXPECT_EQ(back->anchors[0].tokens, 12u);
  EXPECT_EQ(back->anchors[0].activations, 7u);
  ASSERT_EQ(back->anchors[0].deltas.size(), 2u);
  EXPECT_EQ(back->anchors[0].deltas.at("fact_relay.0/reporter.1").following, (Hash128{7, 8}));
  EXPECT_TRUE(back->anchors[0].deltas.at("fact_relay.0/answerer.3").following.IsZero());
  EXPECT_TRUE(back->anchors[1].deltas.empty());
  // Names are per (namespace, model, slot) and start with the common prefix.
  const std::string name = SlotRecordName("ns", record.model, record.slot);
  EXPECT_EQ(name.rfind(kSlotRecordPrefix, 0), 0u);
  EXPECT_NE(name, SlotRecordName("ns", Hash128{1, 3}, record.slot));
  EXPECT_NE(name, SlotRecordName("ns2", record.model, record.slot));
}

TEST(AnchorRecords, DamagedDocumentsAreRefusedWithTheField) {
  std::string good = EncodeSlotRecord(Sample());
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  struct Case {
    std::string text, expect;
  } cases[] = {
      {"[1, 2]", "not a JSON object"},
      {good.substr(0, good.size() / 2), "not a JSON object"},
      {replaced("\"version\":1", "\"version\":2"), "record version 2"},
      {replaced("\"tokens\":12", "\"tokens\":0"), "'tokens' out of range"},
      {replaced("\"activations\":7", "\"activations\":-1"), "'activations'"},
      {replaced("\"base\":\"", "\"base\":\"zz"), "'base'"},
      {replaced("\"slot\"", "\"slit\""), "'slot' missing"},
  };
  for (const auto& c : cases) {
    auto r = DecodeSlotRecord(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.expect << " / " << r.status().message();
  }
}

}  // namespace
}  // namespace kvcomm::daemon
