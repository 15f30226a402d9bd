// Damages a stored payload through RocksDB's own API, as a failing disk would.
#pragma once

#include <string>

namespace kvcomm::testing {

// Flips one bit in the middle of the first payload record of the kvstore database at `dir`
// (which must be closed).
void FlipBitInFirstPayload(const std::string& dir);
// The same in the first named record (TieredStore::PutRecord).
void FlipBitInFirstRecord(const std::string& dir);

}  // namespace kvcomm::testing
