#include "server/model/native_decoder.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace brt {
namespace {

// What Create reads from the module; a missing attribute ends it with UNIMPLEMENTED.
class Reader {
 public:
  explicit Reader(std::string* missing) : missing_(missing) {}

  bool Has(const torch::jit::script::Module& m, const std::string& name) {
    if (m.hasattr(name)) return true;
    if (missing_->empty()) *missing_ = name;
    return false;
  }
  torch::jit::script::Module Sub(const torch::jit::script::Module& m, const std::string& name) {
    return Has(m, name) ? m.attr(name).toModule() : m;
  }
  at::Tensor Tensor(const torch::jit::script::Module& m, const std::string& name) {
    if (!Has(m, name)) return at::zeros({0});
    return m.attr(name).toTensor().detach().to(at::kCPU).contiguous();
  }
  at::Tensor Weight(const torch::jit::script::Module& m, const std::string& sub) {
    return Has(m, sub) ? Tensor(m.attr(sub).toModule(), "weight") : at::zeros({0});
  }
  int64_t Int(const torch::jit::script::Module& m, const std::string& name) {
    return Has(m, name) ? m.attr(name).toInt() : 0;
  }
  double Double(const torch::jit::script::Module& m, const std::string& name) {
    return Has(m, name) ? m.attr(name).toDouble() : 0.0;
  }

 private:
  std::string* missing_;
};

std::vector<float> Floats(const at::Tensor& t) {
  at::Tensor f = t.to(at::kFloat).contiguous();
  return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

PanelMatrix Panels(const at::Tensor& w) {
  at::Tensor f = w.to(at::kFloat).contiguous();
  return PanelMatrix(f.data_ptr<float>(), f.size(0), f.size(1));
}

// y[0..d) = x * rsqrt(mean(x^2) + eps) * w, as the export's RMSNorm.
void RmsNorm(const float* x, const std::vector<float>& w, float eps, int64_t d, float* y) {
  float sum = 0.0f;
  for (int64_t i = 0; i < d; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(d) + eps);
  for (int64_t i = 0; i < d; ++i) y[i] = x[i] * scale * w[static_cast<size_t>(i)];
}

// u *= rsqrt(sum(u^2) + 1e-6), as the export's l2norm.
void L2Norm(float* u, int64_t n) {
  const float scale = 1.0f / std::sqrt(Dot(u, u, n) + 1e-6f);
  for (int64_t i = 0; i < n; ++i) u[i] *= scale;
}

// Per-thread scratch, grown as needed and kept (a decode step then allocates nothing).
std::vector<float>& Scratch(int which, size_t size) {
  thread_local std::vector<float> buffers[6];
  std::vector<float>& b = buffers[which];
  if (b.size() < size) b.resize(size);
  return b;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NativeDecoder>> NativeDecoder::Create(const torch::jit::script::Module& module) {
  std::string missing;
  Reader r(&missing);
  std::unique_ptr<NativeDecoder> nd(new NativeDecoder());
  at::Tensor embed = r.Weight(module, "embed");
  if (!missing.empty() || embed.dim() != 2) {
    return absl::UnimplementedError("the native decode step needs the export's embed.weight (V, D)");
  }
  if (embed.scalar_type() != at::kFloat || !module.attr("embed").toModule().attr("weight").toTensor().is_cpu()) {
    return absl::UnimplementedError("the native decode step runs CPU float32 models only");
  }
  nd->vocab_ = embed.size(0);
  nd->d_ = embed.size(1);
  nd->h_ = r.Int(module, "n_heads");
  nd->dh_ = r.Int(module, "head_dim");
  nd->s_ = r.Int(module, "n_state");
  nd->r_ = r.Int(module, "n_recurrent");
  nd->state_scale_ = static_cast<float>(r.Double(module, "state_scale"));
  nd->logit_scale_ = static_cast<float>(r.Double(module, "logit_scale"));
  nd->embed_ = embed;
  torch::jit::script::Module fn = r.Sub(module, "final_norm");
  nd->final_norm_ = Floats(r.Tensor(fn, "weight"));
  const float final_eps = static_cast<float>(r.Double(fn, "eps"));
  nd->logits_ = Panels(embed);
  const int64_t n_layers = r.Int(module, "n_layers");
  torch::jit::script::Module layers = r.Sub(module, "layers");
  bool finish_ok = true;
  for (int64_t i = 0; i < n_layers && missing.empty(); ++i) {
    torch::jit::script::Module m = r.Sub(layers, std::to_string(i));
    Layer l;
    l.rec = static_cast<int>(r.Int(m, "rec_index"));
    l.C = r.Int(m, "C");
    torch::jit::script::Module n1 = r.Sub(m, "norm1"), n2 = r.Sub(m, "norm2");
    l.norm1 = Floats(r.Tensor(n1, "weight"));
    l.norm2 = Floats(r.Tensor(n2, "weight"));
    if (static_cast<float>(r.Double(n1, "eps")) != final_eps || static_cast<float>(r.Double(n2, "eps")) != final_eps) {
      missing = "one RMSNorm eps for all norms";
    }
    l.alpha = Floats(r.Tensor(m, "alpha"));
    l.rel_bias = Floats(r.Tensor(m, "rel_bias"));
    nd->buckets_ = r.Tensor(m, "rel_bias").size(-1);
    at::Tensor bucket = r.Tensor(m, "dec_bucket").to(at::kInt).contiguous();
    at::Tensor mask = r.Tensor(m, "dec_mask").to(at::kByte).contiguous();
    if (!missing.empty()) break;
    if (bucket.numel() != l.C * l.C || mask.numel() != l.C * l.C) {
      missing = absl::StrCat("layer ", i, "'s dec_bucket and dec_mask of ", l.C, " x ", l.C);
      break;
    }
    // Ordinary layers (C == W) attend to their whole ring; the recurrent layer's ring is 2W, half seen.
    const int32_t* bk = bucket.data_ptr<int32_t>();
    const uint8_t* mk = mask.data_ptr<uint8_t>();
    for (int64_t t = 0; t < l.C; ++t) {
      int64_t seen = 0;
      for (int64_t j = 0; j < l.C; ++j) {
        if (l.rec >= 0 && mk[t * l.C + j] == 0) continue;
        l.seen.push_back(static_cast<int32_t>(j));
        l.seen_bucket.push_back(bk[t * l.C + j]);
        ++seen;
      }
      if (t == 0) l.n_seen = seen;
      if (seen != l.n_seen || seen == 0) missing = absl::StrCat("layer ", i, "'s window of one size");
    }
    std::vector<at::Tensor> proj = {r.Weight(m, "wq"), r.Weight(m, "wk"), r.Weight(m, "wv")};
    if (l.rec >= 0) {
      proj.push_back(r.Weight(m, "wq2"));
      l.alpha2 = Floats(r.Tensor(m, "alpha2"));
    }
    if (!missing.empty()) break;
    if (l.rec >= 0) {
      const bool lstm = m.hasattr("lstm_gate") && m.attr("lstm_gate").toBool();
      finish_ok = finish_ok && !lstm && m.hasattr("s_wq");
      if (finish_ok) {
        torch::jit::script::Module sn = r.Sub(m, "state_norm");
        l.state_norm = Floats(r.Tensor(sn, "weight"));
        if (static_cast<float>(r.Double(sn, "eps")) != final_eps) missing = "one RMSNorm eps for all norms";
        l.state_ids = Floats(r.Tensor(m, "state_ids"));
        l.s_alpha = Floats(r.Tensor(m, "s_alpha"));
        l.s_alpha2 = Floats(r.Tensor(m, "s_alpha2"));
        l.gate = Floats(at::sigmoid(r.Tensor(m, "gate_bias")));
        l.s_q = Panels(at::cat({r.Weight(m, "s_wq"), r.Weight(m, "s_wq2")}, 0));
        l.s_wo = Panels(r.Weight(m, "s_wo"));
        l.s_kv = Panels(at::cat({r.Weight(m, "s_wk"), r.Weight(m, "s_wv")}, 0));
        for (int32_t j = 0; j < l.C; ++j) l.ring_rows.push_back(j);
      }
    }
    if (!missing.empty()) break;
    l.proj = Panels(at::cat(proj, 0));
    l.wo = Panels(r.Weight(m, "wo"));
    torch::jit::script::Module ffn = r.Sub(m, "ffn");
    at::Tensor w1 = r.Weight(ffn, "w1");
    l.w1 = Panels(w1);
    l.w2 = Panels(r.Weight(ffn, "w2"));
    nd->ff_ = w1.size(0);
    if (!missing.empty()) break;
    const bool shapes_ok = static_cast<int64_t>(l.alpha.size()) == nd->h_ &&
                           l.proj.n_out() == (l.rec >= 0 ? 4 : 3) * nd->d_ &&
                           l.wo.k_in() == (l.rec >= 0 ? 2 : 1) * nd->d_ && l.w2.k_in() == nd->ff_;
    if (!shapes_ok) missing = absl::StrCat("the shapes of layer ", i, "'s weights and tables");
    nd->max_c_ = std::max(nd->max_c_, l.C);
    nd->layers_.push_back(std::move(l));
  }
  if (!missing.empty()) {
    return absl::UnimplementedError(absl::StrCat("the export is not the BRT layout the native decode step knows (",
                                                 missing, "); its own decode step runs"));
  }
  if (nd->h_ * nd->dh_ != nd->d_ || final_eps <= 0.0) {
    return absl::UnimplementedError("the native decode step needs n_heads * head_dim == d_model");
  }
  nd->eps_ = final_eps;
  for (int32_t j = 0; j < nd->s_; ++j) nd->state_rows_.push_back(j);
  nd->can_finish_ = finish_ok;
  return nd;
}

void NativeDecoder::Attend(const Layer& l, float* proj, const float* ring, const float* st, int64_t pos, float* att,
                           float* scratch) const {
  const int64_t dh = dh_, D = d_, n = l.n_seen;
  const int64_t t = pos % l.C;
  const int32_t* seen = l.seen.data() + t * n;
  const int32_t* seen_bucket = l.seen_bucket.data() + t * n;
  float* bias = scratch;
  float* scores = scratch + n;
  for (int64_t h = 0; h < h_; ++h) {
    float* q = proj + h * dh;
    L2Norm(q, dh);
    const float* rel = l.rel_bias.data() + h * buckets_;
    for (int64_t i = 0; i < n; ++i) bias[i] = rel[seen_bucket[i]];
    AttendOne(q, ring + h * l.C * dh, ring + (h_ + h) * l.C * dh, dh, seen, n, dh, bias,
              l.alpha[static_cast<size_t>(h)], scores, att + h * dh);
    if (l.rec < 0) continue;
    // The state read: the state query q2 against the S state keys/values (heads of D-wide rows).
    float* q2 = proj + 3 * D + h * dh;
    L2Norm(q2, dh);
    float* out2 = att + D + h * dh;
    AttendOne(q2, st + h * dh, st + s_ * D + h * dh, D, state_rows_.data(), s_, dh, nullptr,
              l.alpha2[static_cast<size_t>(h)], scores, out2);
    for (int64_t i = 0; i < dh; ++i) out2[i] *= state_scale_;
  }
}

void NativeDecoder::Decode(const int64_t* tokens, const int64_t* positions, const int64_t* slots, int64_t n,
                           const std::vector<at::Tensor>& kv, const at::Tensor& state, float* const* out) const {
  thread_local DecodeTeam solo(1);
  Decode(tokens, positions, slots, n, kv, state, out, &solo, 0);
}

void NativeDecoder::Reserve(DecodeTeam* team, int64_t rows, int64_t wanted) const {
  auto grow = [](std::vector<float>& v, int64_t size) {
    if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));  // zero-filled: touched
  };
  grow(team->x_, rows * d_);
  grow(team->xn_, rows * d_);
  grow(team->proj_, rows * std::max(4 * d_, ff_));
  grow(team->att_, rows * 2 * d_);
  grow(team->logits_, wanted * vocab_);  // only the rows whose distribution is asked for
}

void NativeDecoder::Decode(const int64_t* tokens, const int64_t* positions, const int64_t* slots, int64_t n,
                           const std::vector<at::Tensor>& kv, const at::Tensor& state, float* const* out,
                           DecodeTeam* team, int member) const {
  const int64_t D = d_, V = vocab_;
  const int parts = team->size();
  for (int64_t b = 0; b < n; ++b) {
    if (tokens[b] < 0 || tokens[b] >= V || positions[b] < 0) {
      // What the export's embedding would refuse, said as plainly (the runner turns it into a status).
      throw std::out_of_range(absl::StrCat("token ", tokens[b], " at position ", positions[b],
                                           ": ids must be in [0, ", V, ") and positions >= 0"));
    }
  }
  if (member == 0) {
    int64_t wanted = 0;
    for (int64_t b = 0; b < n; ++b) wanted += out[b] != nullptr ? 1 : 0;
    Reserve(team, n, wanted);
  }
  SpinBarrier& meet = team->barrier_;
  meet.Wait();
  float* x = team->x_.data();
  float* xn = team->xn_.data();
  float* proj = team->proj_.data();
  float* att = team->att_.data();
  float* logits = team->logits_.data();
  float* scratch = Scratch(5, 2 * static_cast<size_t>(std::max(max_c_, s_))).data();
  // This member's rows (norms, attention, log-softmax); the products are split by columns instead. A
  // slot's run of rows (a span's tokens) stays with one member, which attends them in order.
  auto run_start = [slots, n](int64_t i) {
    while (i > 0 && i < n && slots[i] == slots[i - 1]) --i;
    return i;
  };
  const int64_t lo = run_start(n * member / parts);
  const int64_t hi = member + 1 == parts ? n : run_start(n * (member + 1) / parts);
  const float* embed = embed_.data_ptr<float>();
  for (int64_t b = lo; b < hi; ++b) std::memcpy(x + b * D, embed + tokens[b] * D, sizeof(float) * D);
  const float* state_base = r_ > 0 ? state.data_ptr<float>() : nullptr;
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    const int64_t width = l.proj.n_out(), att_width = l.wo.k_in();
    for (int64_t b = lo; b < hi; ++b) RmsNorm(x + b * D, l.norm1, eps_, D, xn + b * D);
    meet.Wait();
    l.proj.Multiply(xn, n, D, proj, width, false, member, parts);
    meet.Wait();
    float* pool = kv[li].data_ptr<float>();
    const int64_t slot_floats = 2 * h_ * l.C * dh_;
    for (int64_t b = lo; b < hi; ++b) {
      float* ring = pool + slots[b] * slot_floats;
      const float* st = l.rec >= 0 ? state_base + ((slots[b] * r_ + l.rec) * 3 + 1) * s_ * D : nullptr;
      float* row = proj + b * width;
      Attend(l, row, ring, st, positions[b], att + b * att_width, scratch);
      // The token's key (l2-normalised) and value into ring index pos % C, after the ring was read.
      const int64_t pp = positions[b] % l.C;
      for (int64_t h = 0; h < h_; ++h) {
        float* k = row + D + h * dh_;
        L2Norm(k, dh_);
        std::memcpy(ring + (h * l.C + pp) * dh_, k, sizeof(float) * dh_);
        std::memcpy(ring + ((h_ + h) * l.C + pp) * dh_, row + 2 * D + h * dh_, sizeof(float) * dh_);
      }
    }
    meet.Wait();
    l.wo.Multiply(att, n, att_width, x, D, true, member, parts);  // x += att Wo^T
    meet.Wait();
    for (int64_t b = lo; b < hi; ++b) RmsNorm(x + b * D, l.norm2, eps_, D, xn + b * D);
    meet.Wait();
    l.w1.Multiply(xn, n, D, proj, ff_, false, member, parts);
    int64_t c0 = 0, c1 = 0;
    l.w1.PartColumns(member, parts, &c0, &c1);
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t i = c0; i < c1; ++i) proj[b * ff_ + i] = std::max(proj[b * ff_ + i], 0.0f);
    }
    meet.Wait();
    l.w2.Multiply(proj, n, ff_, x, D, true, member, parts);  // x += relu(norm2(x) W1^T) W2^T
    meet.Wait();
  }
  // Only the rows whose distribution is asked for (out[b] set) go through the output layer, packed in row
  // order at the front of xn (xn is no longer read; each row's place is its own).
  int64_t wanted = 0;
  for (int64_t b = 0; b < lo; ++b) wanted += out[b] != nullptr ? 1 : 0;
  int64_t total = wanted;
  for (int64_t b = lo; b < n; ++b) total += out[b] != nullptr ? 1 : 0;
  for (int64_t b = lo, at = wanted; b < hi; ++b) {
    if (out[b] != nullptr) RmsNorm(x + b * D, final_norm_, eps_, D, xn + (at++) * D);
  }
  meet.Wait();
  logits_.Multiply(xn, total, D, logits, V, false, member, parts);
  meet.Wait();
  for (int64_t b = lo, at = wanted; b < hi; ++b) {
    if (out[b] == nullptr) continue;
    float* lp = out[b];
    const float* z = logits + (at++) * V;
    for (int64_t i = 0; i < V; ++i) lp[i] = z[i] * logit_scale_;
    LogSoftmaxInPlace(lp, V);
  }
}

}  // namespace brt

namespace brt {

void NativeDecoder::FinishRow(const Layer& l, float* st, const float* ring, DecodeTeam* team, int member) const {
  const int64_t D = d_, S = s_, dh = dh_, C = l.C;
  const size_t sd = static_cast<size_t>(S * D);
  // This member's state rows [i0, i1): every state row's update reads only its own row and the old keys
  // and values, so the rows are shared out; one meeting before the new keys and values overwrite the old.
  const int parts = team->size();
  const int64_t i0 = S * member / parts, i1 = S * (member + 1) / parts, m = i1 - i0;
  float* sh = Scratch(0, sd).data();                // state_norm(s) + state_ids, then the new state's
  float* q = Scratch(1, 2 * sd).data();             // [qs | q2s] per state row, then [k | v] of the new state
  float* both = Scratch(2, 2 * sd).data();          // [b1 | b2] per state row
  float* hh = Scratch(3, sd).data();
  float* s = st;
  float* ks = st + sd;
  float* vs = st + 2 * sd;
  for (int64_t i = i0; i < i1; ++i) {
    RmsNorm(s + i * D, l.state_norm, eps_, D, sh + i * D);
    for (int64_t e = 0; e < D; ++e) sh[i * D + e] += l.state_ids[static_cast<size_t>(i * D + e)];
  }
  l.s_q.Multiply(sh + i0 * D, m, D, q + i0 * 2 * D, 2 * D, false);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t h = 0; h < 2 * h_; ++h) L2Norm(q + i * 2 * D + h * dh, dh);  // qs and q2s, per head
  }
  // Per head, as matrix products over this member's state queries: b1 = softmax(s_alpha qs ks^T) vs over
  // the state's own keys/values, b2 = softmax(s_alpha2 q2s K^T) V over the block's 2W ring slots.
  thread_local PanelMatrix keys_t, values_m;
  float* logits = Scratch(4, static_cast<size_t>(S * std::max(C, S))).data();
  for (int64_t h = 0; h < h_; ++h) {
    for (int pass = 0; pass < 2; ++pass) {
      const int64_t n = pass == 0 ? S : C;
      const float* keys = pass == 0 ? ks + h * dh : ring + h * C * dh;
      const float* values = pass == 0 ? vs + h * dh : ring + (h_ + h) * C * dh;
      const int64_t ld = pass == 0 ? D : dh;
      const float alpha = (pass == 0 ? l.s_alpha : l.s_alpha2)[static_cast<size_t>(h)];
      keys_t.SetFromRows(keys, n, dh, ld);
      values_m.SetFromColumns(values, n, dh, ld);
      keys_t.Multiply(q + i0 * 2 * D + pass * D + h * dh, m, 2 * D, logits, n, false);
      for (int64_t i = 0; i < m; ++i) {
        float* row = logits + i * n;
        for (int64_t j = 0; j < n; ++j) row[j] *= alpha;
        SoftmaxInPlace(row, n);
      }
      values_m.Multiply(logits, m, n, both + i0 * 2 * D + pass * D + h * dh, 2 * D, false);
    }
  }
  l.s_wo.Multiply(both + i0 * 2 * D, m, 2 * D, hh + i0 * D, D, false);
  // The fixed gate: s_new = g * s + (1 - g) * hh, in place (the old state row is no longer read).
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t e = 0; e < D; ++e) {
      const float g = l.gate[static_cast<size_t>(e)];
      s[i * D + e] = g * s[i * D + e] + (1.0f - g) * hh[i * D + e];
    }
  }
  team->barrier_.Wait();  // every member has read the old keys and values
  // The new state's keys (l2-normalised per head) and values (state_kv).
  for (int64_t i = i0; i < i1; ++i) {
    RmsNorm(s + i * D, l.state_norm, eps_, D, sh + i * D);
    for (int64_t e = 0; e < D; ++e) sh[i * D + e] += l.state_ids[static_cast<size_t>(i * D + e)];
  }
  l.s_kv.Multiply(sh + i0 * D, m, D, q + i0 * 2 * D, 2 * D, false);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t h = 0; h < h_; ++h) L2Norm(q + i * 2 * D + h * dh, dh);
    std::memcpy(ks + i * D, q + i * 2 * D, sizeof(float) * D);
    std::memcpy(vs + i * D, q + i * 2 * D + D, sizeof(float) * D);
  }
}

void NativeDecoder::Finish(const int64_t* slots, int64_t n, const std::vector<at::Tensor>& kv,
                           const at::Tensor& state) const {
  thread_local DecodeTeam solo(1);
  Finish(slots, n, kv, state, &solo, 0);
}

void NativeDecoder::Finish(const int64_t* slots, int64_t n, const std::vector<at::Tensor>& kv,
                           const at::Tensor& state, DecodeTeam* team, int member) const {
  if (n == 0) return;
  team->barrier_.Wait();  // every member's ring writes of the step are done
  float* state_base = state.data_ptr<float>();
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    if (l.rec < 0) continue;
    const float* pool = kv[li].data_ptr<float>();
    const int64_t slot_floats = 2 * h_ * l.C * dh_;
    for (int64_t b = 0; b < n; ++b) {
      FinishRow(l, state_base + (slots[b] * r_ + l.rec) * 3 * s_ * d_, pool + slots[b] * slot_floats, team, member);
    }
  }
}

}  // namespace brt
