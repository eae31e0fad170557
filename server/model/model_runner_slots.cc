// ModelRunner: a session slot's memory - initialising, copying, and exporting to and importing from the
// host buffers that checkpoints and snapshots keep (HostMemory). The rest of ModelRunner is in
// model_runner.cc (loading, block scoring) and model_runner_rows.cc (token rows).
#include <torch/script.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/model/model_runner.h"
#include "server/model/model_runner_impl.h"
#include "server/model/pool_memory.h"
#include "server/model/tensor_io.h"

namespace brt {
namespace {

// The host shapes of a slot's memory (HostMemory): kv packs every layer's ring into 2W slots.
std::vector<int64_t> HostKvShape(const ModelMetadata& m) {
  return {1, m.n_layers, 2, m.n_heads, 2 * int64_t{m.window}, m.head_dim};
}
std::vector<int64_t> HostStateShape(const ModelMetadata& m) {
  return {1, m.n_recurrent, 3, m.n_state, m.d_model};
}

}  // namespace

absl::Status ModelRunner::InitSlots(const std::vector<int32_t>& slots) {
  if (slots.empty()) return absl::OkStatus();
  std::vector<int64_t> idx;
  for (int32_t s : slots) {
    absl::Status ok = impl_->CheckSlot(s);
    if (!ok.ok()) return ok;
    idx.push_back(s);
  }
  try {
    c10::InferenceMode guard;
    // One intra-op thread: a slot's initial memory is a copy, and an OpenMP region here leaves its
    // worker spinning for ~25 ms afterwards (libgomp's default wait policy), a core taken from the
    // decode steps that follow (the first steps after a Generate's prompt ran ~8x slower).
    impl_->UseThreads(1);
    impl_->Reserve(*std::max_element(slots.begin(), slots.end()));
    impl_->module.get_method("init_slots")(
        {LongTensor(idx, impl_->device), impl_->KvList(), impl_->state});
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("init_slots failed", e);
  }
}

absl::Status ModelRunner::CopySlot(int32_t from, int32_t to) {
  absl::Status ok = impl_->CheckSlot(from);
  if (ok.ok()) ok = impl_->CheckSlot(to);
  if (!ok.ok()) return ok;
  try {
    c10::InferenceMode guard;
    impl_->UseThreads(1);  // a copy: no OpenMP region (see InitSlots)
    impl_->Reserve(std::max(from, to));
    impl_->module.get_method("copy_slots")({LongTensor({from}, impl_->device),
                                            LongTensor({to}, impl_->device), impl_->KvList(),
                                            impl_->state});
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("copy_slots failed", e);
  }
}

absl::StatusOr<HostMemory> ModelRunner::ExportSlot(int32_t slot) {
  HostMemory out;
  absl::Status ok = ExportSlotInto(slot, &out);
  if (!ok.ok()) return ok;
  return out;
}

absl::Status ModelRunner::ExportSlotInto(int32_t slot, HostMemory* out) {
  absl::Status ok = impl_->CheckSlot(slot);
  if (!ok.ok()) return ok;
  if (slot >= impl_->capacity) return absl::InvalidArgumentError(absl::StrCat("slot ", slot, " was never initialised"));
  try {
    c10::InferenceMode guard;
    const ModelMetadata& m = impl_->meta;
    // Straight into the host buffers, reusing their capacity when `out` holds a recycled checkpoint's
    // (on this project's VM a fresh page's first touch costs microseconds: a 1.2 MB export took 3.4 ms
    // into new memory and ~0.15 ms into reused memory).
    const auto opts = at::TensorOptions().dtype(impl_->dtype);
    // A W-slot ring fills half of its layer's 2W host slots; the other half is zeroed (only it: a whole
    // buffer zeroed first and then copied over wrote the ring's bytes twice).
    auto host = [&](std::vector<int64_t> shape, HostTensor* h) {
      h->dtype = DTypeString(impl_->dtype);
      h->shape = std::move(shape);
      const size_t bytes = Elements(h->shape) * c10::elementSize(impl_->dtype);
      if (h->data.capacity() < bytes) {
        // New memory (no recycled buffer): its pages mapped in one call before the fill below writes them.
        h->data.reserve(bytes);
        PrefaultForWrite(h->data.data(), bytes);
      }
      h->data.resize(bytes);
      return at::from_blob(h->data.data(), h->shape, opts);
    };
    at::Tensor kv = host(HostKvShape(m), &out->kv);
    const int64_t slots_per_layer = 2 * int64_t{m.window};
    for (int64_t l = 0; l < m.n_layers; ++l) {
      const int64_t ring = impl_->ring[l];
      kv[0][l].narrow(2, 0, ring).copy_(impl_->kv[l][slot]);
      if (ring < slots_per_layer) kv[0][l].narrow(2, ring, slots_per_layer - ring).zero_();
    }
    host(HostStateShape(m), &out->state).copy_(impl_->state.narrow(0, slot, 1));
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("exporting session memory failed", e);
  }
}

ModelBackend::ExportSize ModelRunner::ExportBytes() const {
  const size_t element = c10::elementSize(impl_->dtype);
  ExportSize size;
  size.kv = Elements(HostKvShape(impl_->meta)) * element;
  size.state = Elements(HostStateShape(impl_->meta)) * element;
  return size;
}

absl::Status ModelRunner::ImportSlot(int32_t slot, const HostMemory& memory) {
  absl::Status ok = impl_->CheckSlot(slot);
  if (!ok.ok()) return ok;
  const ModelMetadata& m = impl_->meta;
  const char* dtype = DTypeString(impl_->dtype);
  auto check = [&](const HostTensor& h, std::vector<int64_t> want, const char* name) -> absl::Status {
    if (h.dtype != dtype || h.shape != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "session memory '", name, "' is ", h.dtype, " ", c10::str(at::IntArrayRef(h.shape)),
          "; this model needs ", dtype, " ", c10::str(at::IntArrayRef(want))));
    }
    if (h.data.size() != Elements(want) * c10::elementSize(impl_->dtype)) {
      return absl::InvalidArgumentError(absl::StrCat("session memory '", name, "' has ",
                                                     h.data.size(), " bytes for its shape"));
    }
    return absl::OkStatus();
  };
  ok = check(memory.kv, HostKvShape(m), "kv");
  if (ok.ok()) ok = check(memory.state, HostStateShape(m), "state");
  if (!ok.ok()) return ok;
  try {
    c10::InferenceMode guard;
    impl_->Reserve(slot);
    auto opts = at::TensorOptions().dtype(impl_->dtype);
    at::Tensor kv = at::from_blob(const_cast<char*>(memory.kv.data.data()), memory.kv.shape, opts);
    at::Tensor state =
        at::from_blob(const_cast<char*>(memory.state.data.data()), memory.state.shape, opts);
    for (int64_t l = 0; l < m.n_layers; ++l) {
      impl_->kv[l][slot].copy_(kv[0][l].narrow(2, 0, impl_->ring[l]));
    }
    impl_->state.narrow(0, slot, 1).copy_(state);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("importing session memory failed", e);
  }
}

}  // namespace brt
