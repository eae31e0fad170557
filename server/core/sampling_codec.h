// Serialization of a session's default sampling (SamplingOverrides) for snapshots: the opaque
// SessionSnapshot::metadata.default_sampling field (server/persistence/snapshot.h).
//
// Format: u8 version (1); u8 presence bits (temperature, top_k, top_p, min_p, repetition_penalty,
// repetition_window, seed); the present values in that order (f32 as IEEE bits, u32, u64; little-endian);
// u32 count of stop strings, each u32 length + bytes. Decoding checks every length against the bytes left
// (the field is as untrusted as the snapshot that carries it); INVALID_ARGUMENT on malformed input.
//
// Thread safety: pure functions.
#ifndef BRT_SERVER_CORE_SAMPLING_CODEC_H_
#define BRT_SERVER_CORE_SAMPLING_CODEC_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/core/sampling_params.h"

namespace brt {

std::string EncodeSamplingOverrides(const SamplingOverrides& s);
absl::StatusOr<SamplingOverrides> DecodeSamplingOverrides(std::string_view bytes);

}  // namespace brt

#endif  // BRT_SERVER_CORE_SAMPLING_CODEC_H_
