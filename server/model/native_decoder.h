// NativeDecoder: the export's token decode step (decode_slots / decode_range of contract slots-v2,
// model/README.md) computed in C++ for a CPU float32 model, reading and writing the same session pools
// in place. Same function as the export's, summed in another order (fp32 rounding; model_runner_test
// checks it against the export's decode_slots over block boundaries and both kinds of layer).
//
// Why: a decode step has a few rows, so its matrix products are small, and on CPU the TorchScript step
// spent as much time outside them as in them: OpenBLAS repacking every weight matrix on every call, one
// query's attention through (B,H,C,dh) temporaries, the interpreter between ~150 operations
// (benchmarks/README.md, "decode-step profile"). Here the weights are packed once (PanelMatrix), the
// attention reads each ring in place with one query, and nothing else is allocated per step. It computes
// the decode step, the fixed-gate state update (Finish) and, with --native_spans, prompts' spans (a span's
// tokens as consecutive rows of one call); block scoring and spans whose every position is scored stay in
// the export.
//
// Built from the module's parameters and tables by name (the BRTLayer layout of model/brt/model.py), so it
// knows that architecture only: Create refuses (with why) an export it does not recognise, and the runner
// then keeps the export's own decode step.
//
// A step may be computed by one thread or by a team of threads together (DecodeTeam): each matrix product
// split by output columns (every weight read once per step, not once per thread), each row's attention and
// ring writes by one member, each state update split by state rows, the members meeting at a SpinBarrier
// between phases. Every output element is summed in the same order either way, so a team's results are
// bitwise a single thread's.
//
// Thread safety: immutable after Create. The single-thread Decode and Finish may run on several threads at
// once for distinct slots (each thread has its own scratch memory); a team's members call the team forms
// together, with the same arguments, and one team runs one call at a time.
#ifndef BRT_SERVER_MODEL_NATIVE_DECODER_H_
#define BRT_SERVER_MODEL_NATIVE_DECODER_H_

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/panel_matrix.h"
#include "server/model/spin_barrier.h"

namespace brt {

// What the members of one team share while computing one step together: the rows' activations, which
// every member reads (a product's input) and writes (its share of the output columns), and the barrier
// between phases. Sized by the step (grown by member 0, kept).
//
// Thread safety: used only inside NativeDecoder's team forms, by `size` threads at once as they direct.
class DecodeTeam {
 public:
  explicit DecodeTeam(int size) : barrier_(size) {}
  DecodeTeam(const DecodeTeam&) = delete;
  DecodeTeam& operator=(const DecodeTeam&) = delete;
  int size() const { return barrier_.parties(); }

 private:
  friend class NativeDecoder;
  SpinBarrier barrier_;
  std::vector<float> x_, xn_, proj_, att_, logits_;
};

class NativeDecoder {
 public:
  // From a loaded export (before torch::jit::freeze_module, which folds the attributes it reads into
  // constants). UNIMPLEMENTED, saying what is missing, for an export of another architecture, device or
  // dtype than CPU float32.
  static absl::StatusOr<std::unique_ptr<NativeDecoder>> Create(const torch::jit::script::Module& module);

  // One token per row i < n: tokens[i] at positions[i] of the document in slot slots[i]. Reads each row's
  // rings in kv (per layer (P, 2, H, C, dh), contiguous float32) and its state's keys and values in state
  // ((P, R, 3, S, D)), writes the token's key and value into the rings (not the state: a row completing a
  // block then needs Finish, or the export's finish_slots), and writes the log-probabilities of the next
  // token (vocab() floats) to out[i], or skips them where out[i] is null. Several rows may feed one slot
  // (a prompt's span): they must be consecutive rows at consecutive positions inside one block, and are
  // fed in order, exactly as one row per call would be; rows of different slots are independent.
  // Throws std::out_of_range, before writing anything, for a token id outside [0, vocab()) or a negative
  // position.
  void Decode(const int64_t* tokens, const int64_t* positions, const int64_t* slots, int64_t n,
              const std::vector<at::Tensor>& kv, const at::Tensor& state, float* const* out) const;
  // The same step computed by the team's size() threads together: each calls this with the same
  // arguments and its own `member` in [0, size()); all return when the step is done. Bad rows throw on
  // every member, before any member waits for another.
  void Decode(const int64_t* tokens, const int64_t* positions, const int64_t* slots, int64_t n,
              const std::vector<at::Tensor>& kv, const at::Tensor& state, float* const* out, DecodeTeam* team,
              int member) const;

  // Whether Finish is available: every recurrent layer has the fixed gate (an LSTM-gated export keeps its
  // own finish_slots).
  bool can_finish() const { return can_finish_; }

  // The state update of the rows in slots[0..n) (distinct), whose last fed token completed a block: the
  // export's finish_slots (BRTLayer.update_state, fixed gate) computed in C++, to fp32 rounding. Reads
  // each row's state and its recurrent layers' rings, writes the new state (with its keys and values) in
  // place.
  void Finish(const int64_t* slots, int64_t n, const std::vector<at::Tensor>& kv, const at::Tensor& state) const;
  // The same, by a team, as the team form of Decode (which it may directly follow: it first waits for
  // every member's ring writes).
  void Finish(const int64_t* slots, int64_t n, const std::vector<at::Tensor>& kv, const at::Tensor& state,
              DecodeTeam* team, int member) const;

  // Grows the team's shared buffers (kept between steps) to hold a step of `rows` rows of which `wanted`
  // ask for a distribution, touching them. A step does this itself (member 0, before the others read
  // them); calling it ahead, when no step runs, moves the first steps' page faults out of them.
  void Reserve(DecodeTeam* team, int64_t rows, int64_t wanted) const;

  int64_t vocab() const { return vocab_; }

 private:
  struct Layer {
    int rec = -1;    // index into the state's R axis, or -1 for an ordinary layer
    int64_t C = 0;   // ring slots (W, or 2W for a recurrent layer)
    std::vector<float> norm1, norm2, alpha, alpha2, rel_bias;  // rel_bias: H x buckets
    // For a query at pos % C == t: the n_seen ring slots in its window (seen[t*n_seen + i]) and their
    // bias buckets (seen_bucket, same places), from the export's dec_mask and dec_bucket.
    int64_t n_seen = 0;
    std::vector<int32_t> seen, seen_bucket;
    PanelMatrix proj;  // [q; k; v (; q2)]: D -> 3D or 4D
    PanelMatrix wo;    // D or 2D -> D
    PanelMatrix w1, w2;
    // Recurrent layers: the state update's weights (BRTLayer.update_state / state_kv).
    std::vector<float> state_norm, state_ids, s_alpha, s_alpha2, gate;  // gate: sigmoid(gate_bias)
    PanelMatrix s_q;   // [s_wq; s_wq2]: D -> 2D
    PanelMatrix s_wo;  // 2D -> D
    PanelMatrix s_kv;  // [s_wk; s_wv]: D -> 2D
    std::vector<int32_t> ring_rows;  // 0..C-1
  };

  NativeDecoder() = default;
  // One row's state update in recurrent layer l: st (3, S, D) of the slot, its ring (2, H, C, dh); this
  // member's share of the S state rows.
  void FinishRow(const Layer& l, float* st, const float* ring, DecodeTeam* team, int member) const;
  // Attention of row b's queries in layer l: reads the ring and the state, writes att (D or 2D floats).
  void Attend(const Layer& layer, float* proj, const float* ring, const float* st, int64_t pos, float* att,
              float* scratch) const;

  int64_t d_ = 0, h_ = 0, dh_ = 0, ff_ = 0, vocab_ = 0, s_ = 0, r_ = 0, buckets_ = 0;
  int64_t max_c_ = 0;  // the longest ring
  bool can_finish_ = false;
  std::vector<int32_t> state_rows_;  // 0..S-1
  float state_scale_ = 1.0f, logit_scale_ = 1.0f, eps_ = 1e-6f;  // eps_: every RMSNorm's
  at::Tensor embed_;  // (V, D), contiguous float32
  std::vector<float> final_norm_;
  PanelMatrix logits_;  // D -> V (the tied embedding)
  std::vector<Layer> layers_;
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_NATIVE_DECODER_H_
