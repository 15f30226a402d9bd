// Where kvcommd listens unless told otherwise; kvcommd, the client library and kvcommctl agree.
#pragma once

#include <string>

namespace kvcomm {

// $KVCOMM_ENDPOINT if set, else ipc://$XDG_RUNTIME_DIR/kvcomm/kvcommd.sock, else
// ipc:///tmp/kvcomm-$UID/kvcommd.sock.
std::string DefaultEndpoint();

}  // namespace kvcomm
