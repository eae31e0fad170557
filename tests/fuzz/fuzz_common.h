// Shared by the snapshot decoder fuzzer and its seed-corpus generator.
//
// Input layout: byte 0 selects a mode, the rest are snapshot bytes.
//   mode bit 0: "re-seal" first: fix the total-size field and recompute the HMAC (with bit 2) and the
//               SHA-256, so that mutations reach the structural checks behind the checksum;
//   mode bit 1: decode with DecodeOptions::expected = FuzzModel();
//   mode bit 2: decode with an HMAC key (kFuzzHmacKey).
#ifndef BRT_TESTS_FUZZ_FUZZ_COMMON_H_
#define BRT_TESTS_FUZZ_FUZZ_COMMON_H_

#include <cstring>
#include <string>

#include "server/persistence/digest.h"
#include "server/persistence/snapshot.h"

namespace brt::persistence::fuzz {

inline constexpr char kFuzzHmacKey[] = "fuzz-hmac-key";

// A tiny model: L=1 H=2 W=2 dh=2 R=1 S=2 D=4 V=8.
inline ModelIdentity FuzzModel() {
  ModelIdentity m;
  m.fingerprint = "f00d";
  m.tokenizer_sha256 = "beef";
  m.dims = {1, 2, 2, 2, 1, 2, 4, 8, DType::kFloat32};
  return m;
}

inline TensorBlob Filled(std::string name, DType dtype, std::vector<uint64_t> shape, char fill) {
  TensorBlob t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  uint64_t n = DTypeSize(dtype);
  for (uint64_t d : t.shape) n *= d;
  t.data.assign(n, fill);
  return t;
}

inline SessionSnapshot FuzzSnapshot(bool full) {
  SessionSnapshot s;
  s.model = FuzzModel();
  if (!full) return s;
  const ModelDims& d = s.model.dims;
  s.position = 5;
  s.tensors.push_back(Filled("kv", DType::kFloat32, {1, d.n_layers, 2, d.n_heads, 2ull * d.window, d.head_dim}, 1));
  s.tensors.push_back(Filled("state", DType::kFloat32, {1, d.n_recurrent, 3, d.n_state, d.d_model}, 2));
  s.tensors.push_back(Filled("next_logprobs", DType::kFloat32, {d.vocab_size}, 3));
  s.tensors.push_back(Filled("extra", DType::kInt64, {2, 1}, 4));
  s.pending_tokens = {1, 2};
  s.text_tail = "ab\xC3";
  s.rng_state = "rng";
  s.recent_tokens = {3, 4, 5};
  s.metadata = {"s_00", "label", 1, 2, "sampling"};
  return s;
}

// Makes `bytes` pass the size, HMAC and checksum checks (whatever else is wrong with it).
inline void Reseal(std::string* bytes, bool with_key) {
  if (bytes->size() < kSnapshotPreambleSize + kSnapshotDigestSize) return;
  const uint64_t total = bytes->size();
  std::memcpy(bytes->data() + 16, &total, 8);
  uint32_t flags;
  std::memcpy(&flags, bytes->data() + 12, 4);
  size_t sum_at = bytes->size() - kSnapshotDigestSize;
  if (with_key && (flags & 1) && sum_at >= kSnapshotPreambleSize + kSnapshotDigestSize) {
    const size_t mac_at = sum_at - kSnapshotDigestSize;
    const Digest mac = HmacSha256(kFuzzHmacKey, std::string_view(*bytes).substr(0, mac_at));
    std::memcpy(bytes->data() + mac_at, mac.data(), mac.size());
  }
  const Digest sum = Sha256(std::string_view(*bytes).substr(0, sum_at));
  std::memcpy(bytes->data() + sum_at, sum.data(), sum.size());
}

}  // namespace brt::persistence::fuzz

#endif  // BRT_TESTS_FUZZ_FUZZ_COMMON_H_
