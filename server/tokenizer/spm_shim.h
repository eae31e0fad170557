// A plain C interface over SentencePiece, built as libbrt_spm_shim.so and loaded at run time with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by Tokenizer (tokenizer.h).
//
// Why: Debian's libsentencepiece carries its own protobuf-lite 3.14 and exports its symbols; linked
// into a process that also has libprotobuf 3.21 (gRPC, LibTorch) it crashes at load. Behind this
// shim, loaded privately, the two never meet. Memory never crosses the boundary: the caller passes
// buffers.
//
// Every function catches all exceptions. Thread safety: a loaded handle is safe for concurrent
// calls (SentencePieceProcessor's const methods are).
#ifndef BRT_SERVER_TOKENIZER_SPM_SHIM_H_
#define BRT_SERVER_TOKENIZER_SPM_SHIM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct brt_spm brt_spm;

// Piece type bits returned by brt_spm_piece_type.
#define BRT_SPM_NORMAL 0
#define BRT_SPM_CONTROL 1
#define BRT_SPM_UNKNOWN 2
#define BRT_SPM_UNUSED 4
#define BRT_SPM_BYTE 8

// Loads a model file. Returns NULL on failure and writes a NUL-terminated message into err.
brt_spm* brt_spm_load(const char* path, char* err, size_t err_cap);
void brt_spm_free(brt_spm* spm);
int32_t brt_spm_vocab_size(const brt_spm* spm);
// which: 0 bos, 1 eos, 2 pad, 3 unk. -1 if the model has none.
int32_t brt_spm_special_id(const brt_spm* spm, int which);
// Encodes text. Writes up to cap ids and the byte span [begin, end) of each piece in the input.
// Returns the number of pieces (if larger than cap, nothing useful was written: call again with a
// larger buffer), or -1 on error (message in err).
int64_t brt_spm_encode(const brt_spm* spm, const char* text, size_t len, int32_t* ids,
                       uint32_t* begins, uint32_t* ends, size_t cap, char* err, size_t err_cap);
// Writes the piece string of id (up to cap bytes). Returns its length, or -1 if id is out of range.
int64_t brt_spm_id_to_piece(const brt_spm* spm, int32_t id, char* buf, size_t cap);
// BRT_SPM_* bits of id.
int32_t brt_spm_piece_type(const brt_spm* spm, int32_t id);
// Id of a piece string, or -1 if the piece is not in the vocabulary (unk id is not returned for
// it).
int32_t brt_spm_piece_to_id(const brt_spm* spm, const char* piece, size_t len);

#ifdef __cplusplus
}
#endif

#endif  // BRT_SERVER_TOKENIZER_SPM_SHIM_H_
