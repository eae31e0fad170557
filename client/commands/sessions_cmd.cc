// brt sessions list|info|create|delete: the session table of a server.
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/proto_json.h"
#include "client/core/progress.h"
#include "client/rpc/connection.h"
#include "client/rpc/scorer.h"

namespace brt::client {
namespace {

constexpr char kUsage[] =
    "brt sessions list                 list the server's sessions\n"
    "brt sessions info ID...           show sessions\n"
    "brt sessions create [--label=L]   create an empty session and print its id\n"
    "brt sessions delete ID...         delete sessions (frees their memory)\n";

std::string Age(int64_t unix_ms) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return FormatDuration((now - unix_ms) / 1000.0) + " ago";
}

void PrintSessionDetails(const brt::v1::Session& s) {
  std::printf("%s\n", s.id().c_str());
  std::printf("  label            %s\n", s.label().c_str());
  std::printf("  tokens_consumed  %llu\n", static_cast<unsigned long long>(s.tokens_consumed()));
  std::printf("  position         %llu (block offset %u)\n",
              static_cast<unsigned long long>(s.position()), s.block_offset());
  std::printf("  state_bytes      %llu on %s\n", static_cast<unsigned long long>(s.state_bytes()),
              s.device().c_str());
  std::printf("  created          %s\n", Age(s.created_unix_ms()).c_str());
  std::printf("  last used        %s\n", Age(s.last_used_unix_ms()).c_str());
  std::printf("  busy             %s\n", s.busy() ? "yes" : "no");
  if (s.earliest_rewind_position() > 0) {
    std::printf("  rewind back to   %llu (brt rewind)\n",
                static_cast<unsigned long long>(s.earliest_rewind_position()));
  }
}

}  // namespace

int RunSessions(const Args& args) {
  ConnectionOptions conn_options;
  bool json = false;
  std::string label;
  std::vector<std::string> positionals;
  ArgParser parser("brt sessions", "list|info|create|delete [ID...] [options]",
                   std::string("Manages the server's sessions.\n\n") + kUsage);
  parser.SetPositionals(&positionals, 1, -1, "");
  parser.AddFlag("json", &json, "print JSON (proto3 JSON mapping of brt.v1.Session)");
  parser.AddString("label", &label, "TEXT", "label for `create`");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;

  const std::string verb = positionals[0];
  const std::vector<std::string> ids(positionals.begin() + 1, positionals.end());
  if (verb != "list" && verb != "info" && verb != "create" && verb != "delete") {
    return UsageError("brt sessions",
                      absl::StrCat("unknown action '", verb, "' (list, info, create or delete)"));
  }
  if ((verb == "info" || verb == "delete") && ids.empty()) {
    return UsageError("brt sessions", absl::StrCat("`sessions ", verb, "` needs a session ID"));
  }
  if ((verb == "list" || verb == "create") && !ids.empty()) {
    return UsageError("brt sessions", absl::StrCat("`sessions ", verb, "` takes no ID"));
  }

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  Connection& c = **conn;

  if (verb == "list") {
    brt::v1::ListSessionsResponse resp;
    auto ctx = c.NewContext(false);
    if (absl::Status s = c.Check(c.brt().ListSessions(ctx.get(), {}, &resp), "ListSessions");
        !s.ok()) {
      return Fail(s);
    }
    if (json) {
      nlohmann::json list = ProtoToJson(resp)["sessions"];
      PrintJson(list);
      return 0;
    }
    std::printf("%-34s %-20s %10s %6s %10s %-8s %-4s %s\n", "ID", "LABEL", "TOKENS", "BLKOFF",
                "STATE", "DEVICE", "BUSY", "LAST USED");
    for (const brt::v1::Session& s : resp.sessions()) {
      std::printf("%-34s %-20s %10llu %6u %10llu %-8s %-4s %s\n", s.id().c_str(),
                  s.label().substr(0, 20).c_str(),
                  static_cast<unsigned long long>(s.tokens_consumed()), s.block_offset(),
                  static_cast<unsigned long long>(s.state_bytes()), s.device().c_str(),
                  s.busy() ? "yes" : "no", Age(s.last_used_unix_ms()).c_str());
    }
    return 0;
  }
  if (verb == "create") {
    absl::StatusOr<brt::v1::Session> s = CreateSession(c, label);
    if (!s.ok()) return Fail(s.status());
    if (json) {
      PrintJson(ProtoToJson(*s));
    } else {
      std::printf("%s\n", s->id().c_str());
    }
    return 0;
  }
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& id : ids) {
    if (verb == "info") {
      brt::v1::GetSessionRequest req;
      req.set_session_id(id);
      brt::v1::Session s;
      auto ctx = c.NewContext(false, id);
      if (absl::Status st = c.Check(c.brt().GetSession(ctx.get(), req, &s), "GetSession");
          !st.ok()) {
        return Fail(st);
      }
      if (json) {
        out.push_back(ProtoToJson(s));
      } else {
        PrintSessionDetails(s);
      }
    } else {
      if (absl::Status st = DeleteSession(c, id); !st.ok()) return Fail(st);
      if (!json) std::printf("deleted %s\n", id.c_str());
      out.push_back({{"deleted", id}});
    }
  }
  if (json) PrintJson(out);
  return 0;
}

}  // namespace brt::client
