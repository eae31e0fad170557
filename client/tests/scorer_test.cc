// ScoreInto and Connection against an in-process fake brt.v1.Brt service on loopback.
#include "client/rpc/scorer.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace brt::client {
namespace {

// Echoes each received chunk back as one "token" covering it; NOT_FOUND for session "missing".
class FakeBrt final : public brt::v1::Brt::Service {
 public:
  grpc::Status Score(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<brt::v1::ScoreResponse, brt::v1::ScoreRequest>* stream) override {
    brt::v1::ScoreRequest req;
    uint64_t bytes = 0, position = 1;
    bool first = true;
    while (stream->Read(&req)) {
      absl::MutexLock lock(&mu_);
      if (first) {
        first_session_ = req.session_id();
        for (const auto& [k, v] : ctx->client_metadata()) {
          if (k == "authorization") authorization_ = std::string(v.data(), v.size());
        }
        if (req.session_id() == "missing") {
          return grpc::Status(grpc::StatusCode::NOT_FOUND, "no session missing");
        }
      } else if (!req.session_id().empty()) {
        later_session_ids_ = true;
      }
      first = false;
      ++messages_;
      text_ += req.text();
      if (req.text().empty()) continue;
      brt::v1::ScoreResponse resp;
      brt::v1::TokenScore* t = resp.add_tokens();
      t->set_position(position++);
      t->set_piece(req.text());
      t->set_byte_begin(bytes);
      bytes += req.text().size();
      t->set_byte_end(bytes);
      t->set_nll(0.5f);
      if (!req.omit_tokens()) stream->Write(resp);
    }
    brt::v1::ScoreResponse last;
    last.mutable_summary()->set_tokens(position - 1);
    last.mutable_summary()->set_bytes(bytes);
    last.mutable_summary()->set_total_nll(0.5 * (position - 1));
    last.mutable_summary()->set_position(position);
    stream->Write(last);
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::string first_session_ ABSL_GUARDED_BY(mu_), text_ ABSL_GUARDED_BY(mu_),
      authorization_ ABSL_GUARDED_BY(mu_);
  bool later_session_ids_ ABSL_GUARDED_BY(mu_) = false;
  int messages_ ABSL_GUARDED_BY(mu_) = 0;
};

class ScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.server = "127.0.0.1:" + std::to_string(port);
    options_.api_key = "k1";
    auto conn = Connection::Create(options_);
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = *std::move(conn);
  }
  void TearDown() override { server_->Shutdown(); }

  FakeBrt fake_;
  std::unique_ptr<grpc::Server> server_;
  ConnectionOptions options_;
  std::unique_ptr<Connection> conn_;
};

TEST_F(ScorerTest, StreamsEveryChunkAndCollectsTokensInOrder) {
  std::string text;
  for (int i = 0; i < 10000; ++i) text += static_cast<char>('a' + i % 26);
  std::vector<TokenRow> rows;
  ScoreOptions opt;
  opt.chunk_bytes = 999;
  absl::StatusOr<Summary> s =
      ScoreInto(*conn_, "s1", StringSource(text), opt, [&](TokenRow&& r) { rows.push_back(r); });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tokens, 11u);  // ceil(10000 / 999)
  EXPECT_EQ(s->bytes, 10000u);
  EXPECT_EQ(s->position, 12u);
  ASSERT_EQ(rows.size(), 11u);
  std::string joined;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].position, i + 1);
    EXPECT_EQ(rows[i].byte_begin, joined.size());
    joined += rows[i].piece;
  }
  EXPECT_EQ(joined, text);
  absl::MutexLock lock(&fake_.mu_);
  EXPECT_EQ(fake_.text_, text);
  EXPECT_EQ(fake_.first_session_, "s1");
  EXPECT_FALSE(fake_.later_session_ids_);  // the session id travels in the first message only
  EXPECT_EQ(fake_.authorization_, "Bearer k1");
}

TEST_F(ScorerTest, EmptyTextSendsOneMessageNamingTheSession) {
  absl::StatusOr<Summary> s = ScoreInto(*conn_, "s2", StringSource(""), {}, nullptr);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tokens, 0u);
  absl::MutexLock lock(&fake_.mu_);
  EXPECT_EQ(fake_.messages_, 1);
  EXPECT_EQ(fake_.first_session_, "s2");
}

TEST_F(ScorerTest, ServerErrorKeepsItsCodeAndNamesTheRpcAndServer) {
  absl::StatusOr<Summary> s = ScoreInto(*conn_, "missing", StringSource("abc"), {}, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.status().message(), "Score to " + options_.server + ": no session missing");
}

TEST_F(ScorerTest, SourceFailureCancelsTheCallAndIsReported) {
  int calls = 0;
  ByteSource failing = [&](size_t) -> absl::StatusOr<std::string> {
    if (++calls < 3) return std::string("chunk");
    return absl::DataLossError("disk gone");
  };
  absl::StatusOr<Summary> s = ScoreInto(*conn_, "s3", failing, {}, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.status().message(), "disk gone");
}

TEST_F(ScorerTest, MissingFileIsNotFound) {
  absl::StatusOr<Summary> s =
      ScoreInto(*conn_, "s4", FileSource("/nonexistent/book.txt"), {}, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
}

TEST(ConnectionTest, UnreachableServerIsUnavailable) {
  ConnectionOptions o;
  o.server = "127.0.0.1:1";
  auto conn = Connection::Create(o);
  ASSERT_TRUE(conn.ok());
  absl::StatusOr<brt::v1::ServerInfo> info = GetServerInfo(**conn);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(info.status().message().rfind("GetServerInfo to 127.0.0.1:1: ", 0), 0u);
}

TEST(ConnectionTest, RejectsBadOptions) {
  ConnectionOptions o;
  o.tls_root_cert = "/nonexistent/ca.pem";
  EXPECT_EQ(Connection::Create(o).status().code(), absl::StatusCode::kNotFound);
  o = {};
  o.timeout_s = -1;
  EXPECT_EQ(Connection::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace brt::client
