// PanelMatrix: a weight matrix stored once, at load, in the layout a few-row matrix product reads fastest,
// and that product (y = x W^T for a handful of rows x, as a decode step has). Plain C++ (no LibTorch), so
// the kernels are unit-tested alone.
//
// Why: OpenBLAS packs the whole weight matrix on every call; for a 16-row decode step that repacking was
// 17% of the executor's time (benchmarks/README.md, "decode-step profile"). Here W^T is packed once, in
// column panels of kPanel floats: panel p holds W^T[k][p*kPanel .. p*kPanel+kPanel-1] for k = 0..K-1,
// contiguous (the last panel zero-padded) and 64-byte aligned, so each k's 16 floats are one cache line. A
// product streams each panel once per group of rows, keeping the group's sums in registers: 8 rows x 2
// panels in AVX-512 registers, or 6 rows x 1 panel in AVX2 ones, whichever the CPU has (ActiveSimd).
//
// Thread safety: immutable after construction; Multiply may run on any number of threads at once.
#ifndef BRT_SERVER_MODEL_PANEL_MATRIX_H_
#define BRT_SERVER_MODEL_PANEL_MATRIX_H_

#include <algorithm>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

namespace brt {

// The instruction sets the kernels here are written for, in order. The kernels use the best the CPU has
// (DetectedSimd), capped by LimitSimd (brt-server --native_simd). Every level computes each product with
// the same multiply-adds in the same order: AVX2 and AVX-512 give bitwise the same products; the portable
// loops may differ in fp32 rounding (a multiply and an add where the others fuse them).
enum class SimdLevel { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
SimdLevel DetectedSimd();
SimdLevel ActiveSimd();  // min(DetectedSimd(), the limit)
// Thread safety: an atomic; a product already running finishes with the kernels it started with.
void LimitSimd(SimdLevel level);
// "auto" (no cap), "avx512", "avx2", "portable"; false for anything else.
bool ParseSimdLevel(const std::string& value, SimdLevel* level);
const char* SimdLevelName(SimdLevel level);

// An allocator of T at 64-byte (cache line, AVX-512 register) boundaries, for std::vector.
template <typename T>
struct CacheAlignedAllocator {
  using value_type = T;
  CacheAlignedAllocator() = default;
  template <typename U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) {}  // NOLINT: allocator rebinding
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const CacheAlignedAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAlignedAllocator<U>&) const { return false; }
};

class PanelMatrix {
 public:
  static constexpr int64_t kPanel = 16;

  PanelMatrix() = default;
  // From W (n_out x k_in, row-major, as nn.Linear keeps its weight): products compute x W^T.
  PanelMatrix(const float* w, int64_t n_out, int64_t k_in);

  // Re-packs this matrix (reusing its memory when the size allows) from W given by rows (n_out rows of k_in
  // floats, row i at w + i*ldw) or by columns (W^T: k_in rows of n_out floats, row k at wt + k*ldw). For
  // products with a matrix that changes per call (attention keys, values): Multiply then computes x K^T
  // or x V. Not thread-safe on the same object (scratch use: one per thread).
  void SetFromRows(const float* w, int64_t n_out, int64_t k_in, int64_t ldw);
  void SetFromColumns(const float* wt, int64_t k_in, int64_t n_out, int64_t ldw);

  int64_t n_out() const { return n_; }
  int64_t k_in() const { return k_; }

  // y[i][0..n_out) = (accumulate ? y[i][..] : 0) + x[i][0..k_in) W^T for rows i < m; row i of x starts at
  // x + i*ldx, of y at y + i*ldy. Sums run in k order (per output element: one fused multiply-add per k,
  // or a plain multiply-add without AVX2), so the result may differ from another product's in fp32
  // rounding, never more.
  //
  // With parts > 1, only the output columns of the column panels in share `part` of `parts` (consecutive,
  // as even as the panels allow) are computed; the other columns of y are neither read nor written. Each
  // column is summed as in the whole product, so `parts` threads, one per part, compute bitwise the
  // whole product, each reading only its share of the weights.
  void Multiply(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, bool accumulate, int part = 0,
                int parts = 1) const;

  // The output columns [first, last) that share `part` of `parts` of a Multiply computes.
  void PartColumns(int part, int parts, int64_t* first, int64_t* last) const {
    *first = std::min(n_, panels_ * part / parts * kPanel);
    *last = std::min(n_, panels_ * (part + 1) / parts * kPanel);
  }

 private:
  // Sizes the panels for an n_out x k_in matrix, zeroed.
  void Reset(int64_t n_out, int64_t k_in);

  int64_t n_ = 0, k_ = 0, panels_ = 0;
  std::vector<float, CacheAlignedAllocator<float>> data_;
};

// p[0..n) = softmax(p[0..n)) (AVX2 where the CPU has it, and ActiveSimd allows).
void SoftmaxInPlace(float* p, int64_t n);

// p[0..n) = log_softmax(p[0..n)) (AVX2 where the CPU has it).
void LogSoftmaxInPlace(float* p, int64_t n);

// Dot product of n floats (AVX2 where the CPU has it).
float Dot(const float* a, const float* b, int64_t n);

// One query's attention, as the export's attend() for one query row: over the keys and values at rows
// rows[0..n) (row r at keys + r*stride, values + r*stride, dh floats each), logits (q.k + bias[i]) * alpha
// (bias may be null: no bias), softmax, and out[0..dh) = the weighted sum of the values. scores: n floats
// of scratch. dh a multiple of 8 runs the AVX2 kernel where the CPU has it.
void AttendOne(const float* q, const float* keys, const float* values, int64_t stride, const int32_t* rows,
               int64_t n, int64_t dh, const float* bias, float alpha, float* scores, float* out);

}  // namespace brt

#endif  // BRT_SERVER_MODEL_PANEL_MATRIX_H_
