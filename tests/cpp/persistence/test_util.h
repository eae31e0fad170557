// Shared helpers for the persistence tests: a StatusIs matcher (Abseil 20220623 has none), a small but
// complete test snapshot, and a way to re-seal edited snapshot bytes so that the structural checks behind
// the checksum can be reached.
#ifndef BRT_TESTS_CPP_PERSISTENCE_TEST_UTIL_H_
#define BRT_TESTS_CPP_PERSISTENCE_TEST_UTIL_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/persistence/digest.h"
#include "server/persistence/snapshot.h"

namespace brt::persistence::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P(StatusIs, code, "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIsWithMessage, code, substring,
           "has status code " + absl::StatusCodeToString(code) + " and a message containing '" +
               std::string(substring) + "'") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code && s.message().find(substring) != absl::string_view::npos;
}

#define BRT_ASSERT_OK(expr) ASSERT_THAT((expr), ::brt::persistence::testing::StatusIs(absl::StatusCode::kOk))
#define BRT_EXPECT_OK(expr) EXPECT_THAT((expr), ::brt::persistence::testing::StatusIs(absl::StatusCode::kOk))

// A tiny model: L=2 H=2 W=4 dh=4 R=1 S=2 D=8 V=16, float32.
inline ModelIdentity TinyModel() {
  ModelIdentity m;
  m.fingerprint = std::string(64, 'a');
  m.tokenizer_sha256 = std::string(64, 'b');
  m.dims = {/*n_layers=*/2, /*n_heads=*/2, /*window=*/4, /*head_dim=*/4, /*n_recurrent=*/1,
            /*n_state=*/2, /*d_model=*/8, /*vocab_size=*/16, DType::kFloat32};
  return m;
}

inline TensorBlob RandomFloats(std::string name, std::vector<uint64_t> shape, std::mt19937* rng) {
  TensorBlob t;
  t.name = std::move(name);
  t.dtype = DType::kFloat32;
  t.shape = std::move(shape);
  uint64_t n = 1;
  for (uint64_t d : t.shape) n *= d;
  t.data.resize(n * 4);
  std::normal_distribution<float> dist;
  for (uint64_t i = 0; i < n; ++i) {
    const float f = dist(*rng);
    std::memcpy(&t.data[i * 4], &f, 4);
  }
  return t;
}

// A session of `model` with every field set, deterministic in `seed`.
inline SessionSnapshot MakeSnapshot(const ModelIdentity& model, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  const ModelDims& d = model.dims;
  SessionSnapshot s;
  s.model = model;
  s.position = 4 * d.window + 3;
  s.tensors.push_back(RandomFloats(std::string(kKvTensor), {1, d.n_layers, 2, d.n_heads, 2ull * d.window, d.head_dim}, &rng));
  s.tensors.push_back(RandomFloats(std::string(kStateTensor), {1, d.n_recurrent, 3, d.n_state, d.d_model}, &rng));
  s.tensors.push_back(RandomFloats(std::string(kNextLogprobsTensor), {d.vocab_size}, &rng));
  s.pending_tokens = {7, 3, 9};
  s.text_tail = std::string("caf\xC3", 4);  // ends inside a UTF-8 character
  s.rng_state = std::string("\x01\x00\x02rng", 6);
  s.recent_tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  s.metadata.session_id = "s_0123456789abcdef0123456789abcdef";
  s.metadata.label = "a book, half read";
  s.metadata.created_unix_ms = 1700000000000 + seed;
  s.metadata.last_used_unix_ms = 1700000001234 + seed;
  s.metadata.default_sampling = std::string("\x08\x01\x15\x00\x00\x80\x3f", 7);
  return s;
}

inline DecodeOptions ExpectModel(const ModelIdentity& model) {
  DecodeOptions o;
  o.expected = model;
  return o;
}

// Recomputes the final SHA-256 (and the HMAC, when `hmac_key` is given) of an edited snapshot.
inline void Reseal(std::string* bytes, const std::string* hmac_key = nullptr) {
  const size_t sum_at = bytes->size() - kSnapshotDigestSize;
  if (hmac_key != nullptr) {
    const size_t mac_at = sum_at - kSnapshotDigestSize;
    const Digest mac = HmacSha256(*hmac_key, std::string_view(*bytes).substr(0, mac_at));
    std::memcpy(bytes->data() + mac_at, mac.data(), mac.size());
  }
  const Digest sum = Sha256(std::string_view(*bytes).substr(0, sum_at));
  std::memcpy(bytes->data() + sum_at, sum.data(), sum.size());
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/brt_persist_XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

template <typename T>
void PutLE(std::string* bytes, size_t offset, T value) {
  std::memcpy(bytes->data() + offset, &value, sizeof value);
}

}  // namespace brt::persistence::testing

#endif  // BRT_TESTS_CPP_PERSISTENCE_TEST_UTIL_H_
