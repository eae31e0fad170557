// make_snapshot_corpus DIR: writes the seed corpus for snapshot_decode_fuzzer into DIR (created if needed): small valid
// snapshots (empty, full, signed) under every mode byte.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/fuzz/fuzz_common.h"

int main(int argc, char** argv) {
  using namespace brt::persistence;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(argv[1], ec);
  const std::string signed_full = EncodeSnapshot(fuzz::FuzzSnapshot(true), std::string(fuzz::kFuzzHmacKey));
  const std::string inputs[] = {EncodeSnapshot(fuzz::FuzzSnapshot(false)), EncodeSnapshot(fuzz::FuzzSnapshot(true)),
                                signed_full};
  int n = 0;
  for (int mode : {0, 1, 2, 3, 5, 7, 15}) {
    for (const std::string& bytes : inputs) {
      std::ofstream out(std::string(argv[1]) + "/seed_" + std::to_string(n++), std::ios::binary);
      out.put(static_cast<char>(mode));
      out << bytes;
      if (!out) return 1;
    }
  }
  std::printf("wrote %d seeds to %s\n", n, argv[1]);
  return 0;
}
