// Snapshot format: round trips, and refusal (with the right code, without crashing, without allocating
// what the input claims) of truncated, bit-flipped, forged, oversized and wrong-model snapshots.
#include "server/persistence/snapshot.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "tests/cpp/persistence/test_util.h"

// ---- allocation tracking: the largest single allocation while tracking is on (this thread) -----------
namespace {
thread_local bool g_tracking = false;
thread_local size_t g_largest_allocation = 0;
}  // namespace

// The replaced delete frees what the replaced new malloc'ed; GCC cannot see that they pair up.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t n) {
  if (g_tracking && n > g_largest_allocation) g_largest_allocation = n;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace brt::persistence {
namespace {

using ::brt::persistence::testing::ExpectModel;
using ::brt::persistence::testing::MakeSnapshot;
using ::brt::persistence::testing::PutLE;
using ::brt::persistence::testing::Reseal;
using ::brt::persistence::testing::StatusIs;
using ::brt::persistence::testing::StatusIsWithMessage;
using ::brt::persistence::testing::TinyModel;

// Decodes while recording the largest allocation.
absl::StatusOr<SessionSnapshot> DecodeTracked(std::string_view bytes, const DecodeOptions& o, size_t* largest) {
  g_largest_allocation = 0;
  g_tracking = true;
  auto result = DecodeSnapshot(bytes, o);
  g_tracking = false;
  *largest = g_largest_allocation;
  return result;
}

void ExpectSameSnapshot(const SessionSnapshot& a, const SessionSnapshot& b) {
  EXPECT_EQ(a.model.fingerprint, b.model.fingerprint);
  EXPECT_EQ(a.model.tokenizer_sha256, b.model.tokenizer_sha256);
  EXPECT_EQ(a.model.dims, b.model.dims);
  EXPECT_EQ(a.position, b.position);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(a.tensors[i].dtype, b.tensors[i].dtype);
    EXPECT_EQ(a.tensors[i].shape, b.tensors[i].shape);
    EXPECT_EQ(a.tensors[i].data, b.tensors[i].data);  // bitwise
  }
  EXPECT_EQ(a.pending_tokens, b.pending_tokens);
  EXPECT_EQ(a.text_tail, b.text_tail);
  EXPECT_EQ(a.rng_state, b.rng_state);
  EXPECT_EQ(a.recent_tokens, b.recent_tokens);
  EXPECT_EQ(a.metadata.session_id, b.metadata.session_id);
  EXPECT_EQ(a.metadata.label, b.metadata.label);
  EXPECT_EQ(a.metadata.created_unix_ms, b.metadata.created_unix_ms);
  EXPECT_EQ(a.metadata.last_used_unix_ms, b.metadata.last_used_unix_ms);
  EXPECT_EQ(a.metadata.default_sampling, b.metadata.default_sampling);
}

uint32_t HeaderSizeOf(const std::string& bytes) {
  uint32_t h;
  std::memcpy(&h, bytes.data() + 24, 4);
  return h;
}

// Offsets inside the tiny snapshot's header (fingerprint and tokenizer checksum are 64 bytes each).
constexpr size_t kFingerprintLenAt = 32;
constexpr size_t kDimsAt = 32 + 4 + 64 + 4 + 64;
constexpr size_t kSessionIdLenAt = kDimsAt + 9 * 4 + 8;

TEST(SnapshotTest, RoundTripPreservesEveryField) {
  const SessionSnapshot s = MakeSnapshot(TinyModel());
  BRT_ASSERT_OK(ValidateSnapshot(s));
  const std::string bytes = EncodeSnapshot(s);
  EXPECT_EQ(bytes.size(), EncodedSnapshotSize(s, /*with_hmac=*/false));
  auto decoded = DecodeSnapshot(bytes, ExpectModel(TinyModel()));
  BRT_ASSERT_OK(decoded);
  ExpectSameSnapshot(s, *decoded);
  EXPECT_EQ(EncodeSnapshot(*decoded), bytes);  // deterministic
}

TEST(SnapshotTest, RoundTripWithHmac) {
  const SessionSnapshot s = MakeSnapshot(TinyModel());
  const std::string key = "server key";
  const std::string bytes = EncodeSnapshot(s, key);
  EXPECT_EQ(bytes.size(), EncodedSnapshotSize(s, /*with_hmac=*/true));
  DecodeOptions o = ExpectModel(TinyModel());
  o.hmac_key = key;
  auto decoded = DecodeSnapshot(bytes, o);
  BRT_ASSERT_OK(decoded);
  ExpectSameSnapshot(s, *decoded);
}

TEST(SnapshotTest, RoundTripOfAnEmptySnapshot) {
  SessionSnapshot s;  // no tensors, empty strings, zero dims
  auto decoded = DecodeSnapshot(EncodeSnapshot(s), DecodeOptions());
  BRT_ASSERT_OK(decoded);
  ExpectSameSnapshot(s, *decoded);
}

TEST(SnapshotTest, KeepsOtherTensorsAndDtypes) {
  SessionSnapshot s = MakeSnapshot(TinyModel());
  TensorBlob extra;
  extra.name = "sampler_counts";
  extra.dtype = DType::kInt64;
  extra.shape = {2, 3};
  extra.data = std::string(48, '\x7f');
  s.tensors.push_back(extra);
  TensorBlob scalar;
  scalar.name = "scalar";
  scalar.dtype = DType::kUint8;
  scalar.data = "x";  // rank 0: one element
  s.tensors.push_back(scalar);
  BRT_ASSERT_OK(ValidateSnapshot(s));
  auto decoded = DecodeSnapshot(EncodeSnapshot(s), ExpectModel(TinyModel()));
  BRT_ASSERT_OK(decoded);
  ExpectSameSnapshot(s, *decoded);
  ASSERT_NE(decoded->FindTensor("sampler_counts"), nullptr);
  EXPECT_EQ(decoded->FindTensor("missing"), nullptr);
}

TEST(SnapshotTest, EveryTruncationIsDataLoss) {
  const std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  for (size_t len = 0; len < bytes.size(); ++len) {
    EXPECT_THAT(DecodeSnapshot(bytes.substr(0, len), ExpectModel(TinyModel())),
                StatusIs(absl::StatusCode::kDataLoss))
        << "truncated to " << len << " of " << bytes.size() << " bytes";
  }
}

TEST(SnapshotTest, TruncationMessageSaysWhatWasExpected) {
  const std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  EXPECT_THAT(DecodeSnapshot(bytes.substr(0, bytes.size() - 1), DecodeOptions()),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  absl::StrCat("declares ", bytes.size(), " bytes, got ", bytes.size() - 1)));
}

TEST(SnapshotTest, TrailingBytesAreDataLoss) {
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  bytes.push_back('\0');
  EXPECT_THAT(DecodeSnapshot(bytes, DecodeOptions()), StatusIs(absl::StatusCode::kDataLoss));
}

void ExpectEveryBitFlipIsDataLoss(const std::string& bytes, const DecodeOptions& o) {
  BRT_ASSERT_OK(DecodeSnapshot(bytes, o));
  std::string flipped = bytes;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      flipped[i] = static_cast<char>(bytes[i] ^ (1 << bit));
      EXPECT_THAT(DecodeSnapshot(flipped, o), StatusIs(absl::StatusCode::kDataLoss))
          << "bit " << bit << " of byte " << i;
      flipped[i] = bytes[i];
    }
  }
}

TEST(SnapshotTest, EveryBitFlipIsDataLoss) {
  ExpectEveryBitFlipIsDataLoss(EncodeSnapshot(MakeSnapshot(TinyModel())), ExpectModel(TinyModel()));
}

TEST(SnapshotTest, EveryBitFlipOfASignedSnapshotIsDataLoss) {
  const std::string key = "k";
  const std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()), key);
  DecodeOptions with_key = ExpectModel(TinyModel());
  with_key.hmac_key = key;
  ExpectEveryBitFlipIsDataLoss(bytes, with_key);
  // A server without a key still detects every flip through the checksum (the HMAC lies under it).
  ExpectEveryBitFlipIsDataLoss(bytes, ExpectModel(TinyModel()));
}

TEST(SnapshotTest, BadMagicIsDataLoss) {
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  bytes[1] = 'X';
  EXPECT_THAT(DecodeSnapshot(bytes, DecodeOptions()), StatusIsWithMessage(absl::StatusCode::kDataLoss, "magic"));
  EXPECT_THAT(DecodeSnapshot("hello, world", DecodeOptions()), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeSnapshot("", DecodeOptions()), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SnapshotTest, WrongFingerprintIsFailedPrecondition) {
  ModelIdentity other = TinyModel();
  other.fingerprint = std::string(64, 'c');
  const std::string bytes = EncodeSnapshot(MakeSnapshot(other));
  auto result = DecodeSnapshot(bytes, ExpectModel(TinyModel()));
  EXPECT_THAT(result, StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "another model"));
  EXPECT_THAT(result, StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, other.fingerprint));
  EXPECT_THAT(result, StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, TinyModel().fingerprint));
}

TEST(SnapshotTest, WrongTokenizerIsFailedPrecondition) {
  ModelIdentity other = TinyModel();
  other.tokenizer_sha256 = std::string(64, 'd');
  EXPECT_THAT(DecodeSnapshot(EncodeSnapshot(MakeSnapshot(other)), ExpectModel(TinyModel())),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "another tokenizer"));
}

TEST(SnapshotTest, EveryWrongDimIsFailedPrecondition) {
  const ModelIdentity base = TinyModel();
  uint32_t ModelDims::*fields[] = {&ModelDims::n_layers,  &ModelDims::n_heads,     &ModelDims::window,
                                   &ModelDims::head_dim,  &ModelDims::n_recurrent, &ModelDims::n_state,
                                   &ModelDims::d_model,   &ModelDims::vocab_size};
  for (auto field : fields) {
    ModelIdentity other = base;
    other.dims.*field += 1;
    const SessionSnapshot s = MakeSnapshot(other);  // consistent with its own dims
    BRT_ASSERT_OK(ValidateSnapshot(s));
    auto result = DecodeSnapshot(EncodeSnapshot(s), ExpectModel(base));
    EXPECT_THAT(result, StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "other dims"));
    EXPECT_THAT(result, StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, base.dims.ToString()));
  }
  ModelIdentity bf16 = base;
  bf16.dims.dtype = DType::kBFloat16;
  SessionSnapshot s = MakeSnapshot(base);
  s.model = bf16;
  for (TensorBlob& t : s.tensors) {
    if (t.name != kNextLogprobsTensor) {
      t.dtype = DType::kBFloat16;
      t.data.resize(t.data.size() / 2);
    }
  }
  BRT_ASSERT_OK(ValidateSnapshot(s));
  EXPECT_THAT(DecodeSnapshot(EncodeSnapshot(s), ExpectModel(base)),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "dtype=bfloat16"));
}

TEST(SnapshotTest, AnyModelIsAcceptedWithoutExpectation) {
  ModelIdentity other = TinyModel();
  other.fingerprint = "x";
  BRT_EXPECT_OK(DecodeSnapshot(EncodeSnapshot(MakeSnapshot(other)), DecodeOptions()));
}

TEST(SnapshotTest, HmacMismatchIsDataLoss) {
  const std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()), std::string("key one"));
  DecodeOptions o = ExpectModel(TinyModel());
  o.hmac_key = "key two";
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kDataLoss, "HMAC mismatch"));
}

TEST(SnapshotTest, ForgedSnapshotWithRecomputedChecksumFailsHmac) {
  const std::string key = "secret";
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()), key);
  PutLE<uint64_t>(&bytes, kDimsAt + 9 * 4, 12345);  // change the position
  Reseal(&bytes);  // an attacker can recompute the SHA-256 but not the HMAC
  DecodeOptions o = ExpectModel(TinyModel());
  o.hmac_key = key;
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIs(absl::StatusCode::kDataLoss));
  Reseal(&bytes, &key);  // with the key it is accepted
  auto decoded = DecodeSnapshot(bytes, o);
  BRT_ASSERT_OK(decoded);
  EXPECT_EQ(decoded->position, 12345u);
}

TEST(SnapshotTest, UnsignedSnapshotRefusedWhenHmacRequired) {
  const std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  DecodeOptions o = ExpectModel(TinyModel());
  o.hmac_key = "key";
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "no HMAC"));
  o.require_hmac = false;
  BRT_EXPECT_OK(DecodeSnapshot(bytes, o));
}

TEST(SnapshotTest, SignedSnapshotAcceptedWithoutKey) {
  BRT_EXPECT_OK(DecodeSnapshot(EncodeSnapshot(MakeSnapshot(TinyModel()), std::string("k")), DecodeOptions()));
}

TEST(SnapshotTest, NewerFormatVersionIsFailedPrecondition) {
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  PutLE<uint32_t>(&bytes, 8, 3);
  Reseal(&bytes);
  EXPECT_THAT(DecodeSnapshot(bytes, DecodeOptions()),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "version 3 is not supported"));
}

// Version 1 held the memory of the v1 export contract (caches shifted per block); its bytes mean
// something else in the slot-ring layout, so it is refused with a message, never misread.
TEST(SnapshotTest, OldFormatVersionOneIsFailedPrecondition) {
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  PutLE<uint32_t>(&bytes, 8, 1);
  Reseal(&bytes);
  EXPECT_THAT(DecodeSnapshot(bytes, DecodeOptions()),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "version 1 is not supported"));
}

TEST(SnapshotTest, UnknownFlagsAreFailedPrecondition) {
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  PutLE<uint32_t>(&bytes, 12, 4);
  Reseal(&bytes);
  EXPECT_THAT(DecodeSnapshot(bytes, DecodeOptions()),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "unknown flags"));
}

// ---- huge declared sizes: refused without allocating what they claim ----------------------------------

TEST(SnapshotTest, HugeTotalSizeInATinyInputIsRefusedWithoutAllocating) {
  std::string bytes(64, '\0');
  std::memcpy(bytes.data(), kSnapshotMagic, 8);
  PutLE<uint32_t>(&bytes, 8, 1);
  PutLE<uint64_t>(&bytes, 16, uint64_t{1} << 62);
  PutLE<uint32_t>(&bytes, 24, 0xFFFFFFFFu);
  PutLE<uint32_t>(&bytes, 28, 0xFFFFFFFFu);
  size_t largest = 0;
  EXPECT_THAT(DecodeTracked(bytes, DecodeOptions(), &largest), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_LT(largest, 1024u);
}

TEST(SnapshotTest, AllocationTrackerSeesPayloadAllocations) {  // the control for the tests below
  SessionSnapshot s = MakeSnapshot(TinyModel());
  TensorBlob big;
  big.name = "big";
  big.dtype = DType::kUint8;
  big.shape = {65536};
  big.data.assign(65536, 'x');
  s.tensors.push_back(big);
  size_t largest = 0;
  BRT_ASSERT_OK(DecodeTracked(EncodeSnapshot(s), DecodeOptions(), &largest));
  EXPECT_GE(largest, 65536u);
}

struct HugeField {
  const char* what;
  size_t offset;   // into the tiny snapshot; SIZE_MAX: the first tensor's dims
  uint64_t value;
  int width;       // 4 or 8 bytes
};

void PrintTo(const HugeField& f, std::ostream* os) { *os << f.what << " = " << f.value; }

class HugeDeclaredSizeTest : public ::testing::TestWithParam<HugeField> {};

TEST_P(HugeDeclaredSizeTest, IsDataLossWithoutAllocating) {
  const HugeField& f = GetParam();
  std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  size_t offset = f.offset;
  if (offset == SIZE_MAX) offset = 32 + HeaderSizeOf(bytes) + 4 + kKvTensor.size() + 8;  // kv dim 0
  if (f.width == 4) PutLE<uint32_t>(&bytes, offset, static_cast<uint32_t>(f.value));
  else PutLE<uint64_t>(&bytes, offset, f.value);
  Reseal(&bytes);  // a forged checksum: only the structural checks stand in the way
  size_t largest = 0;
  auto result = DecodeTracked(bytes, ExpectModel(TinyModel()), &largest);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kDataLoss)) << f.what;
  std::printf("  %s -> %s\n", f.what, result.status().ToString().c_str());
  EXPECT_LT(largest, 4096u) << f.what;
}

INSTANTIATE_TEST_SUITE_P(
    Fields, HugeDeclaredSizeTest,
    ::testing::Values(HugeField{"header size", 24, 0xFFFFFFF0u, 4}, HugeField{"tensor count", 28, 0xFFFFFFFFu, 4},
                      HugeField{"tensor count over limit", 28, 17, 4},
                      HugeField{"fingerprint length", kFingerprintLenAt, 0xFFFFFFFFu, 4},
                      HugeField{"fingerprint length past the header", kFingerprintLenAt, 1000, 4},
                      HugeField{"session id length", kSessionIdLenAt, 0x7FFFFFFFu, 4},
                      HugeField{"kv dim", SIZE_MAX, uint64_t{1} << 40, 8},
                      HugeField{"kv dim overflowing the byte count", SIZE_MAX, ~uint64_t{0}, 8}),
    [](const ::testing::TestParamInfo<HugeField>& info) { return std::to_string(info.index); });

TEST(SnapshotTest, HonoursDecodeLimits) {
  const std::string bytes = EncodeSnapshot(MakeSnapshot(TinyModel()));
  DecodeOptions o;
  o.max_snapshot_bytes = bytes.size() - 1;
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kDataLoss, "limit"));
  o = DecodeOptions();
  o.max_tensors = 2;
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kDataLoss, "tensors"));
  o = DecodeOptions();
  o.max_tensor_bytes = 100;
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kDataLoss, "limit"));
  o = DecodeOptions();
  o.max_token_list = 4;
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kDataLoss, "recent_tokens"));
  o = DecodeOptions();
  o.max_string_bytes = 10;
  EXPECT_THAT(DecodeSnapshot(bytes, o), StatusIsWithMessage(absl::StatusCode::kDataLoss, "fingerprint"));
}

// ---- internally inconsistent snapshots --------------------------------------------------------------

TEST(SnapshotTest, KvShapeInconsistentWithDimsIsRefused) {
  SessionSnapshot s = MakeSnapshot(TinyModel());
  s.tensors[0].shape[1] = 1;  // L=1 instead of 2
  s.tensors[0].data.resize(s.tensors[0].data.size() / 2);
  EXPECT_THAT(ValidateSnapshot(s), StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "'kv'"));
  EXPECT_THAT(DecodeSnapshot(EncodeSnapshot(s), DecodeOptions()),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "'kv'"));
}

TEST(SnapshotTest, DuplicateTensorNamesAreRefused) {
  SessionSnapshot s = MakeSnapshot(TinyModel());
  s.tensors.push_back(s.tensors[1]);
  EXPECT_THAT(ValidateSnapshot(s), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DecodeSnapshot(EncodeSnapshot(s), DecodeOptions()),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "two tensors"));
}

TEST(SnapshotTest, DataSizeNotMatchingShapeIsRefused) {
  SessionSnapshot s = MakeSnapshot(TinyModel());
  s.tensors[2].data.pop_back();
  EXPECT_THAT(ValidateSnapshot(s), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DecodeSnapshot(EncodeSnapshot(s), DecodeOptions()), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace brt::persistence
