// libFuzzer target for DecodeSnapshot (see fuzz_common.h for the input layout). Besides "no crash, no
// sanitizer report, no huge allocation" (run with -rss_limit_mb / -malloc_limit_mb), it checks:
// - every refusal is DATA_LOSS or FAILED_PRECONDITION;
// - whatever decodes re-encodes to the very same bytes (the decoder accepts only canonical encodings), and
//   decodes again.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz_common.h"

using namespace brt::persistence;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool with_key = (mode & 4) != 0;
  if (mode & 1) fuzz::Reseal(&bytes, with_key);

  DecodeOptions o;
  if (mode & 2) o.expected = fuzz::FuzzModel();
  if (with_key) o.hmac_key = fuzz::kFuzzHmacKey;
  o.require_hmac = (mode & 8) != 0;
  o.max_tensor_bytes = 1 << 20;  // keep the fuzzer's memory small; the limits themselves are under test

  auto result = DecodeSnapshot(bytes, o);
  if (!result.ok()) {
    const absl::StatusCode code = result.status().code();
    if (code != absl::StatusCode::kDataLoss && code != absl::StatusCode::kFailedPrecondition) {
      std::fprintf(stderr, "unexpected status: %s\n", result.status().ToString().c_str());
      std::abort();
    }
    return 0;
  }
  uint32_t flags;
  std::memcpy(&flags, bytes.data() + 12, 4);
  const bool signed_input = (flags & 1) != 0;
  // Re-encode the way the input was made: with the key iff it carried an HMAC we could check.
  std::optional<std::string> key;
  if (signed_input) key = with_key ? std::string(fuzz::kFuzzHmacKey) : std::string("unknown");
  const std::string again = EncodeSnapshot(*result, key);
  if (!signed_input || with_key) {
    if (again != bytes) {
      std::fprintf(stderr, "decode(bytes) re-encodes to different bytes (%zu vs %zu)\n", again.size(), bytes.size());
      std::abort();
    }
  }
  DecodeOptions plain;
  plain.max_tensor_bytes = o.max_tensor_bytes;
  auto second = DecodeSnapshot(again, plain);
  if (!second.ok()) {
    std::fprintf(stderr, "re-encoded snapshot does not decode: %s\n", second.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
