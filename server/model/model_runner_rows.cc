// ModelRunner's token-row calls: decode steps (decode_slots / decode_range), spans (span_slots), and both
// in one call (mixed_slots). Each prepares its rows on the host, splits them into shards of even cost, and
// runs a shard's rows with one model call (plus the state update of the rows that complete a block).
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "server/model/model_runner_impl.h"

namespace brt {
namespace {

// Decode rows on the host, in slot order (order[j] is the caller's row at place j): a shard's rows are then
// often consecutive slots (the slot allocator hands out the lowest free one), which decode_range reads in
// place instead of gathering them.
struct DecodeBatch {
  std::vector<int64_t> order, tokens, positions, slots;
  std::vector<bool> completes;  // the token completes a block: the row also runs the state update
  std::vector<double> cost;     // 1, plus kFinishCost for the update
  int32_t max_slot = 0;
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

absl::StatusOr<DecodeBatch> PrepareDecode(const ModelRunner::Impl& impl, const std::vector<DecodeRow>& rows) {
  const int64_t b = static_cast<int64_t>(rows.size());
  const int64_t w = impl.meta.window;
  DecodeBatch d;
  d.order.resize(static_cast<size_t>(b));
  std::iota(d.order.begin(), d.order.end(), 0);
  std::stable_sort(d.order.begin(), d.order.end(), [&rows](int64_t x, int64_t y) {
    return rows[static_cast<size_t>(x)].slot < rows[static_cast<size_t>(y)].slot;
  });
  for (int64_t j = 0; j < b; ++j) {
    const DecodeRow& r = rows[static_cast<size_t>(d.order[static_cast<size_t>(j)])];
    absl::Status ok = impl.CheckSlot(r.slot);
    if (!ok.ok()) return ok;
    d.max_slot = std::max(d.max_slot, r.slot);
    d.tokens.push_back(r.token);
    d.positions.push_back(r.position);
    d.slots.push_back(r.slot);
    // Known on the host: no device sync.
    d.completes.push_back(r.position % w == w - 1);
    d.cost.push_back(d.completes.back() ? 1.0 + kFinishCost : 1.0);
  }
  return d;
}

// Span rows on the host, padded to the longest (the padding, token 0, is neither attended to nor written).
struct SpanBatch {
  int64_t n = 0;  // padded length
  std::vector<int64_t> flat, lengths, starts, slots;
  std::vector<bool> completes;  // the span completes its block: the row also runs the state update
  std::vector<double> cost;     // the padded length, plus kFinishCost for the update
  int32_t max_slot = 0;
  int64_t size() const { return static_cast<int64_t>(lengths.size()); }
};

absl::StatusOr<SpanBatch> PrepareSpans(const ModelRunner::Impl& impl, const std::vector<SpanRow>& rows) {
  const int64_t w = impl.meta.window;
  SpanBatch s;
  for (const auto& r : rows) {
    const int64_t len = static_cast<int64_t>(r.tokens.size());
    if (len == 0 || r.start < 0 || r.start % w + len > w) {
      return absl::InvalidArgumentError(absl::StrCat("FeedSpans: ", len, " tokens at position ", r.start,
                                                     " do not fit in one block of W=", w));
    }
    absl::Status ok = impl.CheckSlot(r.slot);
    if (!ok.ok()) return ok;
    s.max_slot = std::max(s.max_slot, r.slot);
    s.n = std::max(s.n, len);
  }
  const int64_t b = static_cast<int64_t>(rows.size());
  s.flat.assign(static_cast<size_t>(b * s.n), 0);
  for (int64_t i = 0; i < b; ++i) {
    const SpanRow& r = rows[static_cast<size_t>(i)];
    std::copy(r.tokens.begin(), r.tokens.end(), s.flat.begin() + i * s.n);
    s.lengths.push_back(static_cast<int64_t>(r.tokens.size()));
    s.starts.push_back(r.start);
    s.slots.push_back(r.slot);
    s.completes.push_back(r.start % w + s.lengths.back() == w);
    s.cost.push_back(static_cast<double>(s.n) + (s.completes.back() ? kFinishCost : 0.0));
  }
  return s;
}

// The model's inputs for rows [begin, end) of a batch.
struct DecodeInputs {
  at::Tensor tokens, positions, slots;
  int64_t first = -1;  // >= 0: the slots are first, first+1, ... (read in place)
};

DecodeInputs DecodeInputsOf(const ModelRunner::Impl& impl, const DecodeBatch& d, int64_t begin, int64_t end) {
  DecodeInputs in;
  in.tokens = LongTensor(Span(d.tokens, begin, end), impl.device);
  in.positions = LongTensor(Span(d.positions, begin, end), impl.device);
  in.slots = LongTensor(Span(d.slots, begin, end), impl.device);
  if (impl.has_ranges && Consecutive(d.slots, begin, end)) in.first = d.slots[static_cast<size_t>(begin)];
  return in;
}

std::vector<c10::IValue> SpanInputsOf(const ModelRunner::Impl& impl, SpanBatch& s, int64_t begin, int64_t end) {
  const int64_t rows = end - begin;
  return {at::from_blob(s.flat.data() + begin * s.n, {rows, s.n}, at::kLong).to(impl.device),
          LongTensor(Span(s.lengths, begin, end), impl.device), LongTensor(Span(s.starts, begin, end), impl.device),
          LongTensor(Span(s.slots, begin, end), impl.device)};
}

void CopyDecodeOutputs(const at::Tensor& out, const DecodeBatch& d, int64_t begin, std::vector<DecodeResult>* results) {
  at::Tensor logprobs = out.to(at::kCPU, at::kFloat).contiguous();
  const int64_t v = logprobs.size(1);
  for (int64_t i = 0; i < logprobs.size(0); ++i) {
    const float* lp = logprobs.data_ptr<float>() + i * v;
    (*results)[static_cast<size_t>(d.order[static_cast<size_t>(begin + i)])].logprobs.assign(lp, lp + v);
  }
}

void CopySpanOutputs(const c10::ivalue::Tuple& out, const SpanBatch& s, int64_t begin, int64_t end, int top_k,
                     bool all_positions, std::vector<SpanResult>* results) {
  const HostOutputs h = ToHost(out, all_positions);
  for (int64_t i = 0; i < end - begin; ++i) {
    CopyRowOutputs(h.target, h.topk_lp, h.topk_id, h.next, i, s.n, s.lengths[static_cast<size_t>(begin + i)], top_k,
                   all_positions, &(*results)[static_cast<size_t>(begin + i)]);
  }
}

// Appends the slots of the rows in [begin, end) that complete a block.
void AddDone(const std::vector<bool>& completes, const std::vector<int64_t>& slots, int64_t begin, int64_t end,
             std::vector<int64_t>* done) {
  for (int64_t i = begin; i < end; ++i) {
    if (completes[static_cast<size_t>(i)]) done->push_back(slots[static_cast<size_t>(i)]);
  }
}

// Decode rows [begin, end) with one decode_range / decode_slots call.
void RunDecodeRows(ModelRunner::Impl& impl, torch::jit::script::Module& m, const c10::IValue& kv,
                   const DecodeBatch& d, int64_t begin, int64_t end, std::vector<DecodeResult>* results) {
  if (impl.native != nullptr) {
    // In C++, straight into the results (NativeDecoder).
    std::vector<float*> out(static_cast<size_t>(end - begin));
    for (int64_t i = begin; i < end; ++i) {
      std::vector<float>& lp = (*results)[static_cast<size_t>(d.order[static_cast<size_t>(i)])].logprobs;
      lp.resize(static_cast<size_t>(impl.native->vocab()));
      out[static_cast<size_t>(i - begin)] = lp.data();
    }
    impl.native->Decode(d.tokens.data() + begin, d.positions.data() + begin, d.slots.data() + begin, end - begin,
                        impl.kv, impl.state, out.data());
    return;
  }
  DecodeInputs in = DecodeInputsOf(impl, d, begin, end);
  at::Tensor out =
      in.first >= 0
          ? m.get_method("decode_range")({in.tokens, in.positions, in.first, kv, impl.state}).toTensor()
          : m.get_method("decode_slots")({in.tokens, in.positions, in.slots, kv, impl.state}).toTensor();
  CopyDecodeOutputs(out, d, begin, results);
}

// Span rows [begin, end) with one span_slots call.
void RunSpanRows(ModelRunner::Impl& impl, torch::jit::script::Module& m, const c10::IValue& kv, SpanBatch& s,
                 int64_t begin, int64_t end, int top_k, bool all_positions, std::vector<SpanResult>* results) {
  std::vector<c10::IValue> args = SpanInputsOf(impl, s, begin, end);
  args.insert(args.end(), {kv, impl.state, int64_t{top_k}, all_positions});
  auto out = m.get_method("span_slots")(args).toTuple();
  CopySpanOutputs(*out, s, begin, end, top_k, all_positions, results);
}

// Decode rows [d_begin, d_end) of d and span rows [s_begin, s_end) of s (either range may be empty, not
// both) with one model call: decode_range / decode_slots, span_slots, or mixed_slots for both; then the
// state update of the rows that completed a block. Results go to out's vectors at the rows' places.
absl::Status RunShard(ModelRunner::Impl& impl, torch::jit::script::Module& m, const DecodeBatch& d, int64_t d_begin,
                      int64_t d_end, SpanBatch& s, int64_t s_begin, int64_t s_end, int top_k, bool all_positions,
                      MixedResult* out) {
  const char* method = s_begin == s_end ? "decode_slots" : d_begin == d_end ? "span_slots" : "mixed_slots";
  try {
    c10::InferenceMode guard;
    c10::IValue kv = impl.KvList();
    if (s_begin == s_end) {
      RunDecodeRows(impl, m, kv, d, d_begin, d_end, &out->decode);
    } else if (d_begin == d_end) {
      RunSpanRows(impl, m, kv, s, s_begin, s_end, top_k, all_positions, &out->spans);
    } else {
      DecodeInputs in = DecodeInputsOf(impl, d, d_begin, d_end);
      std::vector<c10::IValue> args = {in.tokens, in.positions, in.slots, in.first};
      std::vector<c10::IValue> span_args = SpanInputsOf(impl, s, s_begin, s_end);
      args.insert(args.end(), span_args.begin(), span_args.end());
      args.insert(args.end(), {kv, impl.state, int64_t{top_k}, all_positions});
      auto res = m.get_method("mixed_slots")(args).toTuple();
      const auto& e = res->elements();
      CopyDecodeOutputs(e[0].toTensor(), d, d_begin, &out->decode);
      c10::intrusive_ptr<c10::ivalue::Tuple> span_out = c10::ivalue::Tuple::create({e[1], e[2], e[3], e[4]});
      CopySpanOutputs(*span_out, s, s_begin, s_end, top_k, all_positions, &out->spans);
    }
    std::vector<int64_t> done;
    AddDone(d.completes, d.slots, d_begin, d_end, &done);
    AddDone(s.completes, s.slots, s_begin, s_end, &done);
    std::sort(done.begin(), done.end());
    impl.Finish(m, done, kv);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError(absl::StrCat(method, " failed").c_str(), e);
  }
}

// Rows for the native decoder (NativeDecoder::Decode): one token each, a span's tokens as consecutive
// rows of its slot.
struct NativeRows {
  std::vector<int64_t> tokens, positions, slots;
  std::vector<float*> out;    // where a row's next-token distribution goes, or null (a span's inner tokens)
  std::vector<int64_t> done;  // slots whose last row completes a block
  void Add(int64_t token, int64_t position, int64_t slot, float* distribution) {
    tokens.push_back(token);
    positions.push_back(position);
    slots.push_back(slot);
    out.push_back(distribution);
  }
};

// Runs `rows` through the native decoder, then the state updates of `done` (natively when the decoder can;
// else the export's, here): on the team (Impl::team) when there is one, every shard worker on the whole
// call together, else on this thread. Bad rows fail before any memory is written (NativeDecoder::Decode).
absl::Status RunNative(ModelRunner::Impl& impl, NativeRows& rows) {
  const NativeDecoder& native = *impl.native;
  std::sort(rows.done.begin(), rows.done.end());
  const bool finish_here = native.can_finish();
  const int64_t n = static_cast<int64_t>(rows.tokens.size());
  auto member = [&](DecodeTeam* team, int i) {
    if (team == nullptr) {
      native.Decode(rows.tokens.data(), rows.positions.data(), rows.slots.data(), n, impl.kv, impl.state,
                    rows.out.data());
      if (finish_here) native.Finish(rows.done.data(), static_cast<int64_t>(rows.done.size()), impl.kv, impl.state);
      return;
    }
    native.Decode(rows.tokens.data(), rows.positions.data(), rows.slots.data(), n, impl.kv, impl.state,
                  rows.out.data(), team, i);
    if (finish_here) {
      native.Finish(rows.done.data(), static_cast<int64_t>(rows.done.size()), impl.kv, impl.state, team, i);
    }
  };
  if (impl.team == nullptr) {
    try {
      member(nullptr, 0);
    } catch (const std::exception& e) {
      return TorchError("decode_slots failed", e);
    }
  } else {
    const int members = impl.team->size();
    std::vector<absl::Status> status(static_cast<size_t>(members));
    std::vector<std::function<void()>> jobs;
    for (int i = 0; i < members; ++i) {
      jobs.push_back([&, i] {
        try {
          member(impl.team.get(), i);
        } catch (const std::exception& e) {
          status[static_cast<size_t>(i)] = TorchError("decode_slots failed", e);
        }
      });
    }
    impl.shards->Run(jobs);
    for (const absl::Status& st : status) {
      if (!st.ok()) return st;
    }
  }
  if (!finish_here && !rows.done.empty()) {
    try {
      c10::InferenceMode guard;
      impl.Finish(impl.module, rows.done, impl.KvList());
    } catch (const std::exception& e) {
      return TorchError("finish_slots failed", e);
    }
  }
  return absl::OkStatus();
}

// Adds decode rows [0, d.size()) to `rows`, their distributions into `results` at the rows' places.
void AddDecodeRows(const ModelRunner::Impl& impl, const DecodeBatch& d, std::vector<DecodeResult>* results,
                   NativeRows* rows) {
  for (int64_t i = 0; i < d.size(); ++i) {
    std::vector<float>& lp = (*results)[static_cast<size_t>(d.order[static_cast<size_t>(i)])].logprobs;
    lp.resize(static_cast<size_t>(impl.native->vocab()));
    const size_t at = static_cast<size_t>(i);
    rows->Add(d.tokens[at], d.positions[at], d.slots[at], lp.data());
  }
  AddDone(d.completes, d.slots, 0, d.size(), &rows->done);
}

// Adds span rows (a row per token; the last token's distribution into the span's next_logprobs).
void AddSpanRows(const ModelRunner::Impl& impl, const SpanBatch& s, std::vector<SpanResult>* results,
                 NativeRows* rows) {
  for (int64_t i = 0; i < s.size(); ++i) {
    const size_t at = static_cast<size_t>(i);
    std::vector<float>& next = (*results)[at].next_logprobs;
    next.resize(static_cast<size_t>(impl.native->vocab()));
    const int64_t len = s.lengths[at];
    for (int64_t j = 0; j < len; ++j) {
      rows->Add(s.flat[static_cast<size_t>(i * s.n + j)], s.starts[at] + j, s.slots[at],
                j + 1 == len ? next.data() : nullptr);
    }
  }
  AddDone(s.completes, s.slots, 0, s.size(), &rows->done);
}

// Whether spans go through the native decoder: only their next-token distributions are asked for (a
// prompt; per-position scores and top-k stay in the export's span_slots).
bool NativeSpans(const ModelRunner::Impl& impl, bool all_positions) {
  return impl.native != nullptr && impl.native_spans && !all_positions;
}

}  // namespace

absl::StatusOr<std::vector<DecodeResult>> ModelRunner::DecodeStep(const std::vector<DecodeRow>& rows) {
  if (rows.empty()) return absl::InvalidArgumentError("DecodeStep: no rows");
  absl::StatusOr<DecodeBatch> d = PrepareDecode(*impl_, rows);
  if (!d.ok()) return d.status();
  if (absl::Status grown = impl_->Grow(d->max_slot); !grown.ok()) return grown;
  MixedResult results;
  results.decode.resize(rows.size());
  if (impl_->team != nullptr) {
    NativeRows native;
    AddDecodeRows(*impl_, *d, &results.decode, &native);
    absl::Status ok = RunNative(*impl_, native);
    if (!ok.ok()) return ok;
    return std::move(results.decode);
  }
  SpanBatch none;
  auto shard = [&](torch::jit::script::Module& m, int64_t begin, int64_t end) {
    return RunShard(*impl_, m, *d, begin, end, none, 0, 0, 0, false, &results);
  };
  // Every decode step runs on the shard workers when they are on (one row too): one intra-op thread
  // decodes faster than two here, and the executor's own thread count then never changes.
  absl::Status ok = impl_->ForShards(d->size(), impl_->decode_threads, /*always_pool=*/true, shard, d->cost);
  if (!ok.ok()) return ok;
  return std::move(results.decode);
}

absl::StatusOr<std::vector<SpanResult>> ModelRunner::FeedSpans(const std::vector<SpanRow>& rows, int top_k,
                                                               bool all_positions) {
  if (rows.empty()) return absl::InvalidArgumentError("FeedSpans: no rows");
  if (!impl_->has_spans) return absl::UnimplementedError("this export has no span_slots; re-export it");
  absl::StatusOr<SpanBatch> s = PrepareSpans(*impl_, rows);
  if (!s.ok()) return s.status();
  if (absl::Status grown = impl_->Grow(s->max_slot); !grown.ok()) return grown;
  MixedResult results;
  results.spans.resize(rows.size());
  if (NativeSpans(*impl_, all_positions)) {
    NativeRows native;
    AddSpanRows(*impl_, *s, &results.spans, &native);
    absl::Status ok = RunNative(*impl_, native);
    if (!ok.ok()) return ok;
    return std::move(results.spans);
  }
  const DecodeBatch none;
  auto shard = [&](torch::jit::script::Module& m, int64_t begin, int64_t end) {
    return RunShard(*impl_, m, none, 0, 0, *s, begin, end, top_k, all_positions, &results);
  };
  absl::Status ok = impl_->ForShards(s->size(), impl_->threads, /*always_pool=*/false, shard, s->cost);
  if (!ok.ok()) return ok;
  return std::move(results.spans);
}

bool ModelRunner::SupportsMixedCalls() const { return impl_->has_mixed; }

void ModelRunner::ForEachRow(int64_t n, const std::function<void(int64_t)>& fn) {
  ShardPool* pool = impl_->shards != nullptr ? impl_->shards.get() : impl_->draw_pool.get();
  if (pool == nullptr || n < 2) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  const int64_t k = std::min<int64_t>(pool->threads(), n);
  std::vector<std::function<void()>> jobs;
  for (int64_t j = 0; j < k; ++j) {
    jobs.push_back([&fn, begin = n * j / k, end = n * (j + 1) / k] {
      for (int64_t i = begin; i < end; ++i) fn(i);
    });
  }
  pool->Run(jobs);
}

absl::StatusOr<MixedResult> ModelRunner::DecodeAndFeedSpans(const std::vector<DecodeRow>& decode,
                                                           const std::vector<SpanRow>& spans, int top_k,
                                                           bool all_positions) {
  const bool native = NativeSpans(*impl_, all_positions);
  if ((!impl_->has_mixed && !native) || decode.empty() || spans.empty()) {
    return ModelBackend::DecodeAndFeedSpans(decode, spans, top_k, all_positions);
  }
  absl::StatusOr<DecodeBatch> d = PrepareDecode(*impl_, decode);
  if (!d.ok()) return d.status();
  absl::StatusOr<SpanBatch> s = PrepareSpans(*impl_, spans);
  if (!s.ok()) return s.status();
  if (absl::Status grown = impl_->Grow(std::max(d->max_slot, s->max_slot)); !grown.ok()) return grown;
  MixedResult results;
  results.decode.resize(decode.size());
  results.spans.resize(spans.size());
  if (native) {
    // Both kinds of row in one native call: the decode rows, then each span's tokens.
    NativeRows rows;
    AddDecodeRows(*impl_, *d, &results.decode, &rows);
    AddSpanRows(*impl_, *s, &results.spans, &rows);
    absl::Status ok = RunNative(*impl_, rows);
    if (!ok.ok()) return ok;
    return results;
  }
  // The decode rows, then the span rows, as one list of rows split into shards by cost: a shard gets
  // decode rows, span rows or both, and runs them with one model call.
  const int64_t b1 = d->size();
  std::vector<double> cost = d->cost;
  cost.insert(cost.end(), s->cost.begin(), s->cost.end());
  auto shard = [&](torch::jit::script::Module& m, int64_t begin, int64_t end) {
    return RunShard(*impl_, m, *d, std::min(begin, b1), std::min(end, b1), *s, std::max(begin, b1) - b1,
                    std::max(end, b1) - b1, top_k, all_positions, &results);
  };
  // On the shard workers, like a decode step.
  absl::Status ok = impl_->ForShards(b1 + s->size(), impl_->decode_threads, /*always_pool=*/true, shard,
                                     std::move(cost));
  if (!ok.ok()) return ok;
  return results;
}

}  // namespace brt
