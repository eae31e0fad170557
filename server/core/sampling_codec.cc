#include "server/core/sampling_codec.h"

#include <cstdint>
#include <cstring>

namespace brt {
namespace {

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (as the snapshot format)
  out->append(b, sizeof(T));
}

class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  template <typename T>
  bool Get(T* v) {
    if (b_.size() < sizeof(T)) return false;
    std::memcpy(v, b_.data(), sizeof(T));
    b_.remove_prefix(sizeof(T));
    return true;
  }
  bool Bytes(size_t n, std::string* out) {
    if (b_.size() < n) return false;
    out->assign(b_.data(), n);
    b_.remove_prefix(n);
    return true;
  }
  bool done() const { return b_.empty(); }

 private:
  std::string_view b_;
};

}  // namespace

std::string EncodeSamplingOverrides(const SamplingOverrides& s) {
  std::string out;
  Put<uint8_t>(&out, 1);
  uint8_t bits = (s.temperature ? 1 : 0) | (s.top_k ? 2 : 0) | (s.top_p ? 4 : 0) | (s.min_p ? 8 : 0) |
                 (s.repetition_penalty ? 16 : 0) | (s.repetition_window ? 32 : 0) | (s.seed ? 64 : 0);
  Put<uint8_t>(&out, bits);
  if (s.temperature) Put<float>(&out, *s.temperature);
  if (s.top_k) Put<uint32_t>(&out, *s.top_k);
  if (s.top_p) Put<float>(&out, *s.top_p);
  if (s.min_p) Put<float>(&out, *s.min_p);
  if (s.repetition_penalty) Put<float>(&out, *s.repetition_penalty);
  if (s.repetition_window) Put<uint32_t>(&out, *s.repetition_window);
  if (s.seed) Put<uint64_t>(&out, *s.seed);
  Put<uint32_t>(&out, static_cast<uint32_t>(s.stop.size()));
  for (const std::string& stop : s.stop) {
    Put<uint32_t>(&out, static_cast<uint32_t>(stop.size()));
    out.append(stop);
  }
  return out;
}

absl::StatusOr<SamplingOverrides> DecodeSamplingOverrides(std::string_view bytes) {
  const absl::Status bad = absl::InvalidArgumentError("malformed default_sampling in the snapshot");
  Reader r(bytes);
  uint8_t version = 0, bits = 0;
  if (!r.Get(&version) || version != 1 || !r.Get(&bits) || bits >= 128) return bad;
  SamplingOverrides s;
  float f;
  uint32_t u;
  uint64_t u64;
  if (bits & 1) { if (!r.Get(&f)) return bad; s.temperature = f; }
  if (bits & 2) { if (!r.Get(&u)) return bad; s.top_k = u; }
  if (bits & 4) { if (!r.Get(&f)) return bad; s.top_p = f; }
  if (bits & 8) { if (!r.Get(&f)) return bad; s.min_p = f; }
  if (bits & 16) { if (!r.Get(&f)) return bad; s.repetition_penalty = f; }
  if (bits & 32) { if (!r.Get(&u)) return bad; s.repetition_window = u; }
  if (bits & 64) { if (!r.Get(&u64)) return bad; s.seed = u64; }
  uint32_t n = 0;
  if (!r.Get(&n) || n > kMaxStopSequences) return bad;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = 0;
    std::string stop;
    if (!r.Get(&len) || len > kMaxStopBytes || !r.Bytes(len, &stop)) return bad;
    s.stop.push_back(std::move(stop));
  }
  if (!r.done()) return bad;
  return s;
}

}  // namespace brt
