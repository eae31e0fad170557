// snapshot_crash_writer DIR SEED [unsafe]: writes snapshots to a durable FileSnapshotStore in DIR forever (until
// killed), cycling over a few keys so that files are both created and replaced. Each snapshot carries its
// key as its session id and a ballast tensor of random size (up to 2 MiB) so that kills land in every phase
// of a write. Used by crash_test.cc and benchmarks/snapshot_soak.sh. With "unsafe" it writes each snapshot
// straight into its final file instead (no temp file, no rename): the negative control that shows the crash
// test can see a partial snapshot.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "server/persistence/file_snapshot_store.h"
#include "tests/cpp/persistence/test_util.h"

int main(int argc, char** argv) {
  using namespace brt::persistence;
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s DIR SEED [unsafe]\n", argv[0]);
    return 2;
  }
  auto store = FileSnapshotStore::Create(argv[1], StoreOptions());  // cleans leftovers, like a restart
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  const bool unsafe = argc == 4 && std::strcmp(argv[3], "unsafe") == 0;
  std::mt19937 rng(static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10)));
  for (uint64_t i = 0;; ++i) {
    const std::string key = absl::StrCat("s_", rng() % 6);
    SessionSnapshot s = brt::persistence::testing::MakeSnapshot(brt::persistence::testing::TinyModel(), static_cast<uint32_t>(rng()));
    s.metadata.session_id = key;
    s.position = i;
    TensorBlob ballast;
    ballast.name = "ballast";
    ballast.dtype = DType::kUint8;
    ballast.shape = {rng() % (2u << 20)};
    ballast.data.assign(ballast.shape[0], static_cast<char>(i));
    s.tensors.push_back(std::move(ballast));
    if (unsafe) {
      std::ofstream(absl::StrCat(argv[1], "/", key, ".snap"), std::ios::binary | std::ios::trunc) << EncodeSnapshot(s);
      continue;
    }
    if (absl::Status st = (*store)->Put(key, EncodeSnapshot(s)); !st.ok()) {
      std::fprintf(stderr, "put %s: %s\n", key.c_str(), st.ToString().c_str());
      return 1;
    }
  }
}
