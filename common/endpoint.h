// Where kvcommd listens unless told otherwise; kvcommd, the client library and kvcommctl agree.
#pragma once

#include <string>

#include "common/status.h"

namespace kvcomm {

// $KVCOMM_ENDPOINT if set, else ipc://$XDG_RUNTIME_DIR/kvcomm/kvcommd.sock, else
// ipc:///tmp/kvcomm-$UID/kvcommd.sock.
std::string DefaultEndpoint();

// ipc://PATH (at most 100 characters) or tcp://HOST:PORT.
Status ValidateEndpoint(const std::string& endpoint);
// Creates the directory of an ipc:// endpoint if needed.
Status PrepareEndpoint(const std::string& endpoint);

}  // namespace kvcomm
