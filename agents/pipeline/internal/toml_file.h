// Reads a TOML file into a table; a syntax error becomes an InvalidArgument naming the file.
#pragma once

#include <toml++/toml.h>

#include <string>

#include "common/status.h"

namespace kvcomm::pipeline::internal {

inline Result<toml::table> ParseTomlFile(const std::string& path) {
  try {  // Debian's toml++ is built with exceptions: parse errors arrive as toml::parse_error
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return InvalidArgument("{}: {}", path, e.description());
  }
}

}  // namespace kvcomm::pipeline::internal
