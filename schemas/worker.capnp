# kvcomm-agent worker protocol: a pipeline driver sends agent turns to a worker, which runs them
# on its model (reusing KV through kvcommd) and answers with the reply and its measurements.
#
# Transport: ZeroMQ. Drivers use DEALER sockets, the worker a ROUTER; one frame per message, a
# Cap'n Proto TurnRequest or TurnReply (unpacked). A worker runs one turn at a time, in order.
# Versioning as in kvcomm.capnp: new fields are only ever appended; a worker refuses a
# protocolVersion it does not speak.
@0xf0b56cc4f3d06494;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kvcomm::proto");
using Kv = import "kvcomm.capnp";

const workerProtocolVersion :UInt32 = 1;

enum PromptSegmentKind {
  text @0;
  input @1;
  document @2;
  message @3;
}

# A piece of the rendered prompt; placeholders (all kinds but text) name their slot.
struct PromptSegment {
  kind @0 :PromptSegmentKind;
  text @1 :Text;
  slot @2 :Text;
}

enum PipelineMode {
  dense @0;
  prefix @1;
  naive @2;
  kvcomm @3;
}

struct TurnRequest {
  id @0 :UInt64;
  protocolVersion @1 :UInt32;
  taskId @2 :Text;
  agent @3 :Text;         # what kvcommd keys the agent's anchor deltas by
  slotPrefix @4 :Text;
  segments @5 :List(PromptSegment);
  temperature @6 :Float32;
  topP @7 :Float32;
  seed @8 :UInt64;
  maxReplyTokens @9 :UInt32;
  mode @10 :PipelineMode;
  namespace @11 :Text;    # kvcommd namespace of the reuse modes
  measureFidelity @12 :Bool;
  replyIsRead @13 :Bool;  # another agent reads the reply: kvcomm stores its base KV
  basesAfterReply @14 :Bool;  # kvcomm: new content's base stored after the reply
  trueContextAnchors @15 :Bool;  # kvcomm: anchors reported from their true context
}

struct TurnStats {
  reply @0 :Text;
  promptTokens @1 :Int64;
  reusedTokens @2 :Int64;
  realignedTokens @3 :Int64;
  placeholderTokens @4 :Int64;
  reusedPlaceholderTokens @5 :Int64;
  madeAnchors @6 :Bool;
  fallback @7 :Bool;
  storeFailed @8 :Bool;
  daemonError @9 :Text;
  prefillSeconds @10 :Float64;
  seconds @11 :Float64;
  storeSeconds @12 :Float64;
  nextTokenKl @13 :Float64;
  kvRelativeError @14 :Float64;
  checked @15 :Bool;
  checkChanged @16 :Bool;
  recomputedTokens @17 :Int64;
}

struct TurnReply {
  id @0 :UInt64;
  union {
    error @1 :Kv.Error;
    turn @2 :TurnStats;
  }
}
