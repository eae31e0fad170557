// CheckSnapshotContent: what a snapshot must hold before a session is built from it. Snapshot bytes may
// come from a client (RestoreSession), so after the decoder has verified the format, checksum, signature
// and model identity (server/persistence/snapshot.h), its content is checked like a request: a session-id
// shape, no unfinished input, recent tokens in the vocabulary, the kv and state tensors present, a sane
// position, valid default sampling with UTF-8 stop strings, a UTF-8 label of at most 256 bytes, finite
// tensors, and next-token log-probabilities that form a distribution.
//
// Thread safety: a pure function.
#ifndef BRT_SERVER_CORE_SNAPSHOT_CHECKS_H_
#define BRT_SERVER_CORE_SNAPSHOT_CHECKS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "server/core/sampling_params.h"
#include "server/persistence/snapshot.h"

namespace brt {

// The snapshot's decoded default sampling when its content is acceptable; DATA_LOSS saying what is wrong,
// or FAILED_PRECONDITION for content this server does not read (an unfinished block, a text tail, RNG
// state). new_id: the session gets a fresh id, so the snapshot's own need not be well-formed.
absl::StatusOr<SamplingOverrides> CheckSnapshotContent(const persistence::SessionSnapshot& snap,
                                                       int32_t vocab, bool new_id);

}  // namespace brt

#endif  // BRT_SERVER_CORE_SNAPSHOT_CHECKS_H_
