#include "server/model/panel_matrix.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace brt {
namespace {

constexpr int64_t kP = PanelMatrix::kPanel;
constexpr int kMaxRows = 6;  // rows per kernel call: 6 x 2 accumulators + 2 weight loads + 1 broadcast fit 16 ymm

SimdLevel Detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return SimdLevel::kPortable;
  return __builtin_cpu_supports("avx512f") ? SimdLevel::kAvx512 : SimdLevel::kAvx2;
#else
  return SimdLevel::kPortable;
#endif
}

std::atomic<int> simd_limit{static_cast<int>(SimdLevel::kAvx512)};

bool Avx2() { return ActiveSimd() >= SimdLevel::kAvx2; }

// out (R rows of kP floats, row stride ldo) = (accumulate ? out : 0) + x (R rows of k floats) times one
// panel (k x kP).
template <int R>
void PanelKernelPortable(const float* panel, int64_t k, const float* x, int64_t ldx, float* out, int64_t ldo,
                         bool accumulate, const float* /*prefetch*/) {
  float acc[R][kP];
  for (int r = 0; r < R; ++r) {
    for (int64_t c = 0; c < kP; ++c) acc[r][c] = accumulate ? out[r * ldo + c] : 0.0f;
  }
  for (int64_t i = 0; i < k; ++i) {
    const float* w = panel + i * kP;
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * ldx + i];
      for (int64_t c = 0; c < kP; ++c) acc[r][c] += xv * w[c];
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(out + r * ldo, acc[r], sizeof(acc[r]));
}

#if defined(__x86_64__)
template <int R>
// prefetch: the next panel (read while this one is multiplied: a step streams every weight once, and the
// first row group of a panel otherwise waits for memory), or null.
__attribute__((target("avx2,fma"))) void PanelKernelAvx2(const float* panel, int64_t k, const float* x,
                                                          int64_t ldx, float* out, int64_t ldo, bool accumulate,
                                                          const float* prefetch) {
  __m256 a0[R], a1[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    a0[r] = accumulate ? _mm256_loadu_ps(out + r * ldo) : _mm256_setzero_ps();
    a1[r] = accumulate ? _mm256_loadu_ps(out + r * ldo + 8) : _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < k; ++i) {
    if (prefetch != nullptr) _mm_prefetch(reinterpret_cast<const char*>(prefetch + i * kP), _MM_HINT_T0);
    const __m256 w0 = _mm256_loadu_ps(panel + i * kP);
    const __m256 w1 = _mm256_loadu_ps(panel + i * kP + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * ldx + i);
      a0[r] = _mm256_fmadd_ps(xv, w0, a0[r]);
      a1[r] = _mm256_fmadd_ps(xv, w1, a1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(out + r * ldo, a0[r]);
    _mm256_storeu_ps(out + r * ldo + 8, a1[r]);
  }
}

// R rows x P consecutive panels (P*kP columns) in AVX-512 registers: one 16-float register a row and panel,
// each x value broadcast into its multiply-adds. The same fused multiply-add per element and k as the AVX2
// kernel, in the same order, so the two compute bitwise the same product; twice the floats an instruction.
// mask: the columns of the last of the P panels that exist (only the matrix's last panel is partial): out
// is read and written only there. prefetch: the next call's panels (prefetch_panels of them, 0-2), a line
// of each per k, so that the weights streamed from memory arrive while this call computes (both of a
// pair: a 32-row decode step measured 1.7-2.2 ms against 2.2-2.4 with the first only).
template <int R, int P>
__attribute__((target("avx512f"))) void PanelKernelAvx512(const float* panel, int64_t k, const float* x,
                                                           int64_t ldx, float* out, int64_t ldo, bool accumulate,
                                                           const float* prefetch, int prefetch_panels,
                                                           uint16_t last_mask) {
  __m512 acc[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) {
      const __mmask16 mask = p == P - 1 ? last_mask : 0xFFFF;
      acc[r][p] = accumulate ? _mm512_maskz_loadu_ps(mask, out + r * ldo + p * kP) : _mm512_setzero_ps();
    }
  }
  for (int64_t i = 0; i < k; ++i) {
    if (prefetch_panels > 0) _mm_prefetch(reinterpret_cast<const char*>(prefetch + i * kP), _MM_HINT_T0);
    if (prefetch_panels > 1) _mm_prefetch(reinterpret_cast<const char*>(prefetch + (k + i) * kP), _MM_HINT_T0);
    __m512 w[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) w[p] = _mm512_loadu_ps(panel + p * k * kP + i * kP);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * ldx + i]);
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) acc[r][p] = _mm512_fmadd_ps(xv, w[p], acc[r][p]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) {
      _mm512_mask_storeu_ps(out + r * ldo + p * kP, p == P - 1 ? last_mask : 0xFFFF, acc[r][p]);
    }
  }
}

using Kernel512 = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool, const float*, int,
                           uint16_t);
// Rows per kernel call: 8 rows x 2 panels = 16 accumulators (of 32 registers), enough independent sums to
// keep both multiply-add pipes busy. Measured, one thread, the model's products at 8-64 rows: 8 and 12 rows
// a call ran alike (~205-218 GFLOP/s, ~95% of a core's peak), 6 and one panel a call slower.
constexpr int kMaxRows512 = 8;

template <int P, int... R>
constexpr std::array<Kernel512, sizeof...(R)> Kernels512(std::integer_sequence<int, R...>) {
  return {PanelKernelAvx512<R + 1, P>...};
}

// Multiply's AVX-512 path over panels [first, last): two panels a call (one if the last is alone), rows in
// groups as even as possible of at most 8 (32 rows: four of 8; 20 rows: 7, 7, 6).
void MultiplyAvx512(const float* data, int64_t k, int64_t n, int64_t first, int64_t last, const float* x,
                    int64_t m, int64_t ldx, float* y, int64_t ldy, bool accumulate) {
  static constexpr auto kOne = Kernels512<1>(std::make_integer_sequence<int, kMaxRows512>());
  static constexpr auto kTwo = Kernels512<2>(std::make_integer_sequence<int, kMaxRows512>());
  const int64_t groups = (m + kMaxRows512 - 1) / kMaxRows512;
  for (int64_t p = first; p < last;) {
    const int64_t count = p + 1 < last ? 2 : 1;
    const float* panel = data + p * k * kP;
    const int next_count = static_cast<int>(std::min<int64_t>(2, last - (p + count)));
    const int64_t width = std::min(kP, n - (p + count - 1) * kP);  // of the last panel of the call
    const uint16_t mask = static_cast<uint16_t>((1u << width) - 1u);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = m * g / groups, rows = m * (g + 1) / groups - begin;
      const Kernel512 kernel = count == 2 ? kTwo[rows - 1] : kOne[rows - 1];
      kernel(panel, k, x + begin * ldx, ldx, y + begin * ldy + p * kP, ldy, accumulate, panel + count * k * kP,
             g == 0 ? next_count : 0, mask);
    }
    p += count;
  }
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  const __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float total = _mm_cvtss_f32(h);
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// exp(x) for 8 floats: x = k ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial (the Cephes expf
// coefficients), times 2^k built in the exponent bits. Relative error ~2e-7 over the range softmax uses
// (x <= 0); inputs below -87.3 give 0 or a denormal-free tiny value, as exp's underflow does.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
  const __m256 k = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// p[0..n) = softmax(p[0..n)).
__attribute__((target("avx2,fma"))) void SoftmaxAvx2(float* p, int64_t n) {
  float mx = p[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, p[i]);
  const __m256 m = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(p + i), m));
    _mm256_storeu_ps(p + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t rest = n - i;
  if (rest > 0) {
    float in[8];
    for (int64_t j = 0; j < 8; ++j) in[j] = j < rest ? p[i + j] - mx : -100.0f;
    _mm256_storeu_ps(tail, Exp8(_mm256_loadu_ps(in)));
    for (int64_t j = 0; j < rest; ++j) p[i + j] = tail[j];
  }
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float sum = _mm_cvtss_f32(h);
  for (int64_t j = 0; j < rest; ++j) sum += tail[j];
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(p + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), inv));
  for (; i < n; ++i) p[i] *= 1.0f / sum;
}

// sum of exp(p[i] - mx) for i < n (p unchanged).
__attribute__((target("avx2,fma"))) float SumExpAvx2(const float* p, int64_t n, float mx) {
  const __m256 m = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, Exp8(_mm256_sub_ps(_mm256_loadu_ps(p + i), m)));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float sum = _mm_cvtss_f32(h);
  for (; i < n; ++i) sum += std::exp(p[i] - mx);
  return sum;
}

// scores[i] = (q.k_rows[i] + bias[i]) * alpha for i < n, four keys at a time (four independent sums).
__attribute__((target("avx2,fma"))) void ScoresAvx2(const float* q, const float* keys, int64_t stride,
                                                    const int32_t* rows, int64_t n, int64_t dh, const float* bias,
                                                    float alpha, float* scores) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float* k0 = keys + rows[i] * stride;
    const float* k1 = keys + rows[i + 1] * stride;
    const float* k2 = keys + rows[i + 2] * stride;
    const float* k3 = keys + rows[i + 3] * stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t d = 0; d < dh; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
    }
    // Lane sums of the four: [s0 s1 s2 s3] per 128-bit half, then the halves added.
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    if (bias != nullptr) s4 = _mm_add_ps(s4, _mm_loadu_ps(bias + i));
    _mm_storeu_ps(scores + i, _mm_mul_ps(s4, _mm_set1_ps(alpha)));
  }
  for (; i < n; ++i) {
    const float dot = DotAvx2(q, keys + rows[i] * stride, dh);
    scores[i] = (bias != nullptr ? dot + bias[i] : dot) * alpha;
  }
}

// out[0..dh) = sum_i p[i] * values_rows[i], 32 floats of out at a time kept in registers.
__attribute__((target("avx2,fma"))) void WeightedSumAvx2(const float* p, const float* values, int64_t stride,
                                                         const int32_t* rows, int64_t n, int64_t dh, float* out) {
  for (int64_t d = 0; d < dh; d += 32) {
    if (dh - d >= 32) {
      __m256 o0 = _mm256_setzero_ps(), o1 = _mm256_setzero_ps(), o2 = _mm256_setzero_ps(), o3 = _mm256_setzero_ps();
      for (int64_t i = 0; i < n; ++i) {
        const float* v = values + rows[i] * stride + d;
        const __m256 pv = _mm256_broadcast_ss(p + i);
        o0 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v), o0);
        o1 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + 8), o1);
        o2 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + 16), o2);
        o3 = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + 24), o3);
      }
      _mm256_storeu_ps(out + d, o0);
      _mm256_storeu_ps(out + d + 8, o1);
      _mm256_storeu_ps(out + d + 16, o2);
      _mm256_storeu_ps(out + d + 24, o3);
      continue;
    }
    for (int64_t e = d; e < dh; e += 8) {
      __m256 o = _mm256_setzero_ps();
      for (int64_t i = 0; i < n; ++i) {
        o = _mm256_fmadd_ps(_mm256_broadcast_ss(p + i), _mm256_loadu_ps(values + rows[i] * stride + e), o);
      }
      _mm256_storeu_ps(out + e, o);
    }
  }
}
#endif

using Kernel = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool, const float*);

Kernel KernelFor(int rows, bool avx2) {
#if defined(__x86_64__)
  if (avx2) {
    static constexpr Kernel kAvx2[kMaxRows] = {PanelKernelAvx2<1>, PanelKernelAvx2<2>, PanelKernelAvx2<3>,
                                               PanelKernelAvx2<4>, PanelKernelAvx2<5>, PanelKernelAvx2<6>};
    return kAvx2[rows - 1];
  }
#endif
  static constexpr Kernel kPortable[kMaxRows] = {PanelKernelPortable<1>, PanelKernelPortable<2>,
                                                 PanelKernelPortable<3>, PanelKernelPortable<4>,
                                                 PanelKernelPortable<5>, PanelKernelPortable<6>};
  return kPortable[rows - 1];
}

}  // namespace

SimdLevel DetectedSimd() {
  static const SimdLevel detected = Detect();
  return detected;
}

SimdLevel ActiveSimd() {
  return std::min(DetectedSimd(), static_cast<SimdLevel>(simd_limit.load(std::memory_order_relaxed)));
}

void LimitSimd(SimdLevel level) { simd_limit.store(static_cast<int>(level), std::memory_order_relaxed); }

bool ParseSimdLevel(const std::string& value, SimdLevel* level) {
  if (value == "auto" || value == "avx512") {
    *level = SimdLevel::kAvx512;
  } else if (value == "avx2") {
    *level = SimdLevel::kAvx2;
  } else if (value == "portable") {
    *level = SimdLevel::kPortable;
  } else {
    return false;
  }
  return true;
}

const char* SimdLevelName(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512:
      return "avx512";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kPortable:
      break;
  }
  return "portable";
}

PanelMatrix::PanelMatrix(const float* w, int64_t n_out, int64_t k_in) { SetFromRows(w, n_out, k_in, k_in); }

void PanelMatrix::Reset(int64_t n_out, int64_t k_in) {
  n_ = n_out;
  k_ = k_in;
  panels_ = (n_out + kP - 1) / kP;
  data_.assign(static_cast<size_t>(panels_ * k_ * kP), 0.0f);  // the last panel's padding stays 0
}

void PanelMatrix::SetFromRows(const float* w, int64_t n_out, int64_t k_in, int64_t ldw) {
  Reset(n_out, k_in);
  for (int64_t p = 0; p < panels_; ++p) {
    float* panel = data_.data() + p * k_ * kP;
    for (int64_t c = 0; c < kP && p * kP + c < n_; ++c) {
      const float* row = w + (p * kP + c) * ldw;  // row n of W is column n of W^T
      for (int64_t i = 0; i < k_; ++i) panel[i * kP + c] = row[i];
    }
  }
}

void PanelMatrix::SetFromColumns(const float* wt, int64_t k_in, int64_t n_out, int64_t ldw) {
  Reset(n_out, k_in);
  for (int64_t p = 0; p < panels_; ++p) {
    float* panel = data_.data() + p * k_ * kP;
    const int64_t width = std::min(kP, n_ - p * kP);
    for (int64_t i = 0; i < k_; ++i) std::memcpy(panel + i * kP, wt + i * ldw + p * kP, sizeof(float) * width);
  }
}

void PanelMatrix::Multiply(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, bool accumulate, int part,
                           int parts) const {
  const int64_t first = panels_ * part / parts, last = panels_ * (part + 1) / parts;
#if defined(__x86_64__)
  if (ActiveSimd() == SimdLevel::kAvx512) {
    MultiplyAvx512(data_.data(), k_, n_, first, last, x, m, ldx, y, ldy, accumulate);
    return;
  }
#endif
  const bool avx2 = Avx2();
  float tail[kMaxRows * kP];
  for (int64_t p = first; p < last; ++p) {
    const float* panel = data_.data() + p * k_ * kP;
    const float* next = p + 1 < last ? panel + k_ * kP : nullptr;
    const int64_t col = p * kP;
    const int64_t width = std::min(kP, n_ - col);
    for (int64_t i = 0; i < m; i += kMaxRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kMaxRows, m - i));
      const Kernel kernel = KernelFor(rows, avx2);
      if (width == kP) {
        kernel(panel, k_, x + i * ldx, ldx, y + i * ldy + col, ldy, accumulate, i == 0 ? next : nullptr);
        continue;
      }
      // The last, partial panel: through a full-width buffer.
      for (int r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < kP; ++c) tail[r * kP + c] = accumulate && c < width ? y[(i + r) * ldy + col + c] : 0.0f;
      }
      kernel(panel, k_, x + i * ldx, ldx, tail, kP, accumulate, nullptr);
      for (int r = 0; r < rows; ++r) std::memcpy(y + (i + r) * ldy + col, tail + r * kP, sizeof(float) * width);
    }
  }
}

void SoftmaxInPlace(float* p, int64_t n) {
#if defined(__x86_64__)
  if (Avx2()) {
    SoftmaxAvx2(p, n);
    return;
  }
#endif
  float mx = p[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, p[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    p[i] = std::exp(p[i] - mx);
    sum += p[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) p[i] *= inv;
}

void LogSoftmaxInPlace(float* p, int64_t n) {
  float mx = p[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, p[i]);
  float sum = 0.0f;
#if defined(__x86_64__)
  if (Avx2()) {
    sum = SumExpAvx2(p, n, mx);
  } else
#endif
  {
    for (int64_t i = 0; i < n; ++i) sum += std::exp(p[i] - mx);
  }
  const float shift = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) p[i] -= shift;
}

float Dot(const float* a, const float* b, int64_t n) {
#if defined(__x86_64__)
  if (Avx2()) return DotAvx2(a, b, n);
#endif
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += a[i] * b[i];
  return total;
}

void AttendOne(const float* q, const float* keys, const float* values, int64_t stride, const int32_t* rows,
               int64_t n, int64_t dh, const float* bias, float alpha, float* scores, float* out) {
#if defined(__x86_64__)
  const bool avx2 = Avx2() && dh % 8 == 0;
#else
  const bool avx2 = false;
#endif
  if (avx2) {
#if defined(__x86_64__)
    ScoresAvx2(q, keys, stride, rows, n, dh, bias, alpha, scores);
#endif
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float dot = Dot(q, keys + rows[i] * stride, dh);
      scores[i] = (bias != nullptr ? dot + bias[i] : dot) * alpha;
    }
  }
  SoftmaxInPlace(scores, n);
#if defined(__x86_64__)
  if (avx2) {
    WeightedSumAvx2(scores, values, stride, rows, n, dh, out);
    return;
  }
#endif
  std::fill(out, out + dh, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float* v = values + rows[i] * stride;
    for (int64_t e = 0; e < dh; ++e) out[e] += scores[i] * v[e];
  }
}

}  // namespace brt
