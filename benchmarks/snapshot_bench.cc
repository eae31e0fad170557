// Micro-benchmarks for session snapshots at the size of the default model's session
// (L=4 H=4 W=64 dh=64 R=1 S=64 D=256 V=4096, float32): encode, decode (checksum, optional HMAC, model
// check), and file-store put/get (durable, i.e. with fsync, and without). Set BRT_BENCH_DIR to pick the
// file system (default $TMPDIR or /tmp) and BRT_BENCH_REDIS=redis://host:port/db to add Redis put/get.
// Build with -DBRT_BUILD_BENCHMARKS=ON; see benchmarks/README-snapshot.md for the command and results.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "server/persistence/file_snapshot_store.h"
#include "server/persistence/snapshot.h"
#include "server/persistence/snapshot_store.h"

namespace brt::persistence {
namespace {

ModelIdentity DefaultModel() {
  ModelIdentity m;
  m.fingerprint = std::string(64, 'f');
  m.tokenizer_sha256 = std::string(64, 't');
  m.dims = {/*n_layers=*/4, /*n_heads=*/4, /*window=*/64, /*head_dim=*/64, /*n_recurrent=*/1,
            /*n_state=*/64, /*d_model=*/256, /*vocab_size=*/4096, DType::kFloat32};
  return m;
}

TensorBlob Random(std::string name, std::vector<uint64_t> shape, std::mt19937* rng) {
  TensorBlob t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  uint64_t n = 1;
  for (uint64_t d : t.shape) n *= d;
  t.data.resize(n * 4);
  for (uint64_t i = 0; i < n; ++i) {
    const float f = std::uniform_real_distribution<float>(-3, 3)(*rng);
    std::memcpy(&t.data[i * 4], &f, 4);
  }
  return t;
}

const SessionSnapshot& DefaultSession() {
  static const SessionSnapshot* s = [] {
    std::mt19937 rng(1);
    auto* snap = new SessionSnapshot();
    snap->model = DefaultModel();
    const ModelDims& d = snap->model.dims;
    snap->position = 1000;
    snap->tensors.push_back(Random("kv", {1, d.n_layers, 2, d.n_heads, 2ull * d.window, d.head_dim}, &rng));
    snap->tensors.push_back(Random("state", {1, d.n_recurrent, 3, d.n_state, d.d_model}, &rng));
    snap->tensors.push_back(Random("next_logprobs", {d.vocab_size}, &rng));
    snap->pending_tokens.assign(40, 17);
    snap->recent_tokens.assign(64, 23);
    snap->rng_state.assign(5000, 'r');  // about a serialized std::mt19937
    snap->metadata = {"s_0123456789abcdef0123456789abcdef", "bench", 1, 2, std::string(32, 'p')};
    return snap;
  }();
  return *s;
}

const std::string kKey = "server snapshot key, 32 bytes..";

void BM_Encode(benchmark::State& state) {
  const bool hmac = state.range(0) != 0;
  std::optional<std::string> key;
  if (hmac) key = kKey;
  size_t size = 0;
  for (auto _ : state) {
    std::string bytes = EncodeSnapshot(DefaultSession(), key);
    size = bytes.size();
    benchmark::DoNotOptimize(bytes);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.counters["snapshot_bytes"] = static_cast<double>(size);
}
BENCHMARK(BM_Encode)->Arg(0)->Arg(1)->ArgName("hmac");

void BM_Decode(benchmark::State& state) {
  const bool hmac = state.range(0) != 0;
  std::optional<std::string> key;
  if (hmac) key = kKey;
  const std::string bytes = EncodeSnapshot(DefaultSession(), key);
  DecodeOptions o;
  o.expected = DefaultModel();
  o.hmac_key = key;
  for (auto _ : state) {
    auto s = DecodeSnapshot(bytes, o);
    if (!s.ok()) state.SkipWithError(std::string(s.status().message()).c_str());
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK(BM_Decode)->Arg(0)->Arg(1)->ArgName("hmac");

std::string BenchDir() {
  const char* dir = std::getenv("BRT_BENCH_DIR");
  if (dir == nullptr || *dir == '\0') dir = std::getenv("TMPDIR");
  std::string templ = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/brt_snapshot_bench_XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) std::abort();
  return templ;
}

void BM_FileStorePut(benchmark::State& state) {
  const std::string dir = BenchDir();
  StoreOptions o;
  o.durable = state.range(0) != 0;
  auto store = FileSnapshotStore::Create(dir, o);
  const std::string bytes = EncodeSnapshot(DefaultSession());
  for (auto _ : state) {
    if (absl::Status s = (*store)->Put("s_bench", bytes); !s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_FileStorePut)->Arg(1)->Arg(0)->ArgName("fsync")->UseRealTime();

void BM_FileStoreGet(benchmark::State& state) {
  const std::string dir = BenchDir();
  auto store = FileSnapshotStore::Create(dir, StoreOptions());
  const std::string bytes = EncodeSnapshot(DefaultSession());
  (void)(*store)->Put("s_bench", bytes);
  for (auto _ : state) {
    auto got = (*store)->Get("s_bench");
    benchmark::DoNotOptimize(got);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_FileStoreGet)->UseRealTime();

// What the server does on save and restore: encode + durable put; get + decode.
void BM_SaveToFile(benchmark::State& state) {
  const std::string dir = BenchDir();
  auto store = FileSnapshotStore::Create(dir, StoreOptions());
  for (auto _ : state) {
    (void)(*store)->Put("s_bench", EncodeSnapshot(DefaultSession()));
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_SaveToFile)->UseRealTime();

void BM_RestoreFromFile(benchmark::State& state) {
  const std::string dir = BenchDir();
  auto store = FileSnapshotStore::Create(dir, StoreOptions());
  (void)(*store)->Put("s_bench", EncodeSnapshot(DefaultSession()));
  DecodeOptions o;
  o.expected = DefaultModel();
  for (auto _ : state) {
    auto s = DecodeSnapshot(*(*store)->Get("s_bench"), o);
    benchmark::DoNotOptimize(s);
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_RestoreFromFile)->UseRealTime();

void BM_RedisPutGet(benchmark::State& state) {
  const char* uri = std::getenv("BRT_BENCH_REDIS");
  if (uri == nullptr || *uri == '\0') {
    state.SkipWithError("set BRT_BENCH_REDIS=redis://host:port/db to run");
    return;
  }
  auto store = CreateSnapshotStore(uri);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  const std::string bytes = EncodeSnapshot(DefaultSession());
  const bool put = state.range(0) == 0;
  (void)(*store)->Put("s_bench", bytes);
  for (auto _ : state) {
    if (put) {
      (void)(*store)->Put("s_bench", bytes);
    } else {
      auto got = (*store)->Get("s_bench");
      benchmark::DoNotOptimize(got);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
  (void)(*store)->Delete("s_bench");
}
BENCHMARK(BM_RedisPutGet)->Arg(0)->Arg(1)->ArgName("get")->UseRealTime();

}  // namespace
}  // namespace brt::persistence

BENCHMARK_MAIN();
