// Binary encoding of SegmentMeta for the RocksDB metadata column family. Versioned; decoding
// checks every length against the record so a damaged record is an error, never a crash.
#pragma once

#include <string>
#include <string_view>

#include "kvstore/segment.h"

namespace kvcomm::kvstore::internal {

std::string EncodeMeta(const SegmentMeta& meta);
Result<SegmentMeta> DecodeMeta(std::string_view record);

}  // namespace kvcomm::kvstore::internal
