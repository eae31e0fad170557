#include "client/rpc/scorer.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/rpc/interrupt.h"

namespace brt::client {

ByteSource StringSource(std::string_view text) {
  auto offset = std::make_shared<size_t>(0);
  return [text, offset](size_t max_bytes) -> absl::StatusOr<std::string> {
    const size_t n = std::min(max_bytes, text.size() - *offset);
    std::string chunk(text.substr(*offset, n));
    *offset += n;
    return chunk;
  };
}

ByteSource FileSource(const std::string& path) {
  if (path == "-") {
    return [](size_t max_bytes) -> absl::StatusOr<std::string> {
      std::string chunk(max_bytes, '\0');
      const size_t n = std::fread(chunk.data(), 1, max_bytes, stdin);
      if (n < max_bytes && std::ferror(stdin)) return absl::DataLossError("reading stdin failed");
      chunk.resize(n);
      return chunk;
    };
  }
  auto in = std::make_shared<std::ifstream>();
  return [path, in](size_t max_bytes) -> absl::StatusOr<std::string> {
    if (!in->is_open()) {
      in->open(path, std::ios::binary);
      if (!in->is_open()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
    }
    std::string chunk(max_bytes, '\0');
    in->read(chunk.data(), static_cast<std::streamsize>(max_bytes));
    if (in->bad()) return absl::DataLossError(absl::StrCat("reading ", path, " failed"));
    chunk.resize(static_cast<size_t>(in->gcount()));
    return chunk;
  };
}

absl::StatusOr<Summary> ScoreInto(Connection& conn, const std::string& session_id,
                                  ByteSource source, const ScoreOptions& options,
                                  const TokenCallback& on_token) {
  std::unique_ptr<grpc::ClientContext> ctx = conn.NewContext(/*streaming=*/true, session_id);
  Interrupts::CancelScope cancel_on_interrupt(ctx.get());
  std::unique_ptr<grpc::ClientReaderWriter<brt::v1::ScoreRequest, brt::v1::ScoreResponse>> stream =
      conn.brt().Score(ctx.get());

  // The writer reports a failure of the source here; it then cancels the call so the reader stops.
  absl::Status source_status;
  std::thread writer([&] {
    brt::v1::ScoreRequest req;
    req.set_session_id(session_id);
    req.set_omit_tokens(options.omit_tokens);
    bool first = true;
    while (true) {
      absl::StatusOr<std::string> chunk = source(options.chunk_bytes);
      if (!chunk.ok()) {
        source_status = chunk.status();
        ctx->TryCancel();
        return;
      }
      if (chunk->empty() && !first) break;
      req.set_text(*std::move(chunk));
      const bool empty = req.text().empty();
      if (!stream->Write(req)) return;  // the call ended; Finish() says why
      if (empty) break;
      first = false;
      req.Clear();
    }
    stream->WritesDone();
  });

  brt::v1::ScoreResponse resp;
  Summary summary;
  bool have_summary = false;
  while (stream->Read(&resp)) {
    if (on_token) {
      for (brt::v1::TokenScore& t : *resp.mutable_tokens()) {
        TokenRow row;
        row.position = t.position();
        row.token_id = t.token_id();
        row.piece = std::move(*t.mutable_piece());
        row.byte_begin = t.byte_begin();
        row.byte_end = t.byte_end();
        row.nll = t.nll();
        on_token(std::move(row));
      }
    }
    if (resp.has_summary()) {
      const brt::v1::ScoreSummary& s = resp.summary();
      summary.tokens = s.tokens();
      summary.bytes = s.bytes();
      summary.total_nll = s.total_nll();
      summary.mean_nll = s.mean_nll();
      summary.perplexity = s.perplexity();
      summary.bits_per_token = s.bits_per_token();
      summary.bits_per_byte = s.bits_per_byte();
      summary.position = s.position();
      have_summary = true;
    }
  }
  writer.join();
  const grpc::Status status = stream->Finish();
  if (!source_status.ok()) return source_status;
  if (absl::Status s = conn.Check(status, "Score"); !s.ok()) return s;
  if (!have_summary) {
    return absl::InternalError(
        absl::StrCat("Score to ", conn.server(), " ended without a summary"));
  }
  return summary;
}

absl::StatusOr<brt::v1::Session> CreateSession(Connection& conn, const std::string& label) {
  brt::v1::CreateSessionRequest req;
  req.set_label(label);
  brt::v1::Session session;
  // The id is drawn here and sent as x-brt-session, so a proxy routing by it sends the create and the
  // session's later calls to the same replica (brt.proto, CreateSession).
  std::random_device rd;
  std::string id = "s_";
  for (int i = 0; i < 4; ++i) absl::StrAppend(&id, absl::Hex(rd(), absl::kZeroPad8));
  auto ctx = conn.NewContext(false, id);
  if (absl::Status s =
          conn.Check(conn.brt().CreateSession(ctx.get(), req, &session), "CreateSession");
      !s.ok()) {
    return s;
  }
  return session;
}

absl::Status DeleteSession(Connection& conn, const std::string& session_id) {
  brt::v1::DeleteSessionRequest req;
  req.set_session_id(session_id);
  brt::v1::DeleteSessionResponse resp;
  auto ctx = conn.NewContext(false, session_id);
  return conn.Check(conn.brt().DeleteSession(ctx.get(), req, &resp), "DeleteSession");
}

absl::StatusOr<brt::v1::ServerInfo> GetServerInfo(Connection& conn) {
  brt::v1::ServerInfo info;
  auto ctx = conn.NewContext(false);
  if (absl::Status s =
          conn.Check(conn.brt().GetServerInfo(ctx.get(), brt::v1::GetServerInfoRequest(), &info),
                     "GetServerInfo");
      !s.ok()) {
    return s;
  }
  return info;
}

}  // namespace brt::client
