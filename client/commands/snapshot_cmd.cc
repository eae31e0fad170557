// brt save | restore | fork | rewind | snapshots: session persistence (SaveSession, RestoreSession,
// ForkSession, ListSnapshots, DeleteSnapshot; see "Session persistence" in proto/brt/v1/brt.proto).
#include <cstdio>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/proto_json.h"
#include "client/rpc/connection.h"

namespace brt::client {
namespace {

void PrintSession(const brt::v1::Session& s, bool json) {
  if (json) {
    PrintJson(ProtoToJson(s));
  } else {
    std::printf("%s\n", s.id().c_str());
  }
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

}  // namespace

int RunSave(const Args& args) {
  ConnectionOptions conn_options;
  std::string out_path;
  bool store = true, json = false;
  std::vector<std::string> ids;
  ArgParser parser(
      "brt save", "[options] SESSION_ID",
      "Snapshots an idle session: its exact model memory, position, recent tokens, label and\n"
      "default sampling. By default into the server's snapshot store under the session id "
      "(restore\n"
      "it with `brt restore ID`; the server also restores it by itself on the id's first use "
      "after\n"
      "a restart); with --out also (or, with --store=false, only) into a local file.");
  parser.SetPositionals(&ids, 1, 1, "SESSION_ID  the session to save");
  parser.AddString("out", &out_path, "FILE", "also write the snapshot bytes to FILE");
  parser.AddFlag("store", &store, "write to the server's snapshot store (on; --store=false: not)");
  parser.AddFlag("json", &json, "print {snapshot_key, size_bytes, file} as JSON");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;
  if (!store && out_path.empty()) {
    return UsageError("brt save",
                      "--store=false needs --out=FILE (the snapshot must go somewhere)");
  }

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  brt::v1::SaveSessionRequest req;
  req.set_session_id(ids[0]);
  req.set_return_bytes(!out_path.empty());
  req.set_to_store(store);
  brt::v1::SaveSessionResponse resp;
  auto ctx = (*conn)->NewContext(false, ids[0]);
  if (absl::Status s =
          (*conn)->Check((*conn)->brt().SaveSession(ctx.get(), req, &resp), "SaveSession");
      !s.ok()) {
    return Fail(s);
  }
  if (!out_path.empty()) {
    if (absl::Status s = WriteFile(out_path, resp.snapshot()); !s.ok()) return Fail(s);
  }
  if (json) {
    PrintJson({{"session_id", ids[0]},
               {"snapshot_key", resp.snapshot_key()},
               {"size_bytes", resp.size_bytes()},
               {"file", out_path.empty() ? nlohmann::json() : nlohmann::json(out_path)}});
    return 0;
  }
  if (!resp.snapshot_key().empty()) {
    std::printf("saved %s to the server's store as %s (%llu bytes)\n", ids[0].c_str(),
                resp.snapshot_key().c_str(), static_cast<unsigned long long>(resp.size_bytes()));
  }
  if (!out_path.empty()) {
    std::printf("wrote %s (%zu bytes)\n", out_path.c_str(), resp.snapshot().size());
  }
  return 0;
}

int RunRestore(const Args& args) {
  ConnectionOptions conn_options;
  std::string from;
  bool new_id = false, json = false;
  std::vector<std::string> keys;
  ArgParser parser(
      "brt restore", "[options] (SNAPSHOT_KEY | --from=FILE)",
      "Loads a saved session, from the server's snapshot store (SNAPSHOT_KEY: the session id it "
      "was\n"
      "saved under) or from a file written by `brt save --out` (on this or another server of the\n"
      "same model). It comes back under its original id unless --new_id; prints the id.");
  parser.SetPositionals(&keys, 0, 1, "SNAPSHOT_KEY  key in the server's store (a session id)");
  parser.AddString("from", &from, "FILE", "restore from this snapshot file instead");
  parser.AddFlag("new_id", &new_id, "restore under a new session id");
  parser.AddFlag("json", &json, "print the restored session as JSON");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;
  if (keys.empty() == from.empty()) {
    return UsageError("brt restore", "give either SNAPSHOT_KEY or --from=FILE");
  }

  brt::v1::RestoreSessionRequest req;
  if (!from.empty()) {
    absl::StatusOr<std::string> bytes = ReadWholeFile(from);
    if (!bytes.ok()) return Fail(bytes.status());
    req.set_snapshot(*std::move(bytes));
  } else {
    req.set_snapshot_key(keys[0]);
  }
  req.set_new_id(new_id);
  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  brt::v1::Session session;
  auto ctx = (*conn)->NewContext(false);
  if (absl::Status s =
          (*conn)->Check((*conn)->brt().RestoreSession(ctx.get(), req, &session), "RestoreSession");
      !s.ok()) {
    return Fail(s);
  }
  PrintSession(session, json);
  return 0;
}

int RunFork(const Args& args) {
  ConnectionOptions conn_options;
  bool json = false;
  std::optional<uint64_t> position;
  std::vector<std::string> ids;
  ArgParser parser("brt fork", "[options] SESSION_ID",
                   "Copies an idle session into a new session (same document so far, same\n"
                   "defaults); the two then continue independently. Prints the new id.\n"
                   "With --position, the copy is the session as it was at that earlier position\n"
                   "(exactly; see brt rewind), and the original is untouched.");
  parser.SetPositionals(&ids, 1, 1, "SESSION_ID  the session to copy");
  parser.AddFlag("json", &json, "print the new session as JSON");
  parser.AddOptionalUint("position", &position,
                         "fork at this earlier position (1 = start; see the session's "
                         "earliest_rewind_position)");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  brt::v1::ForkSessionRequest req;
  req.set_session_id(ids[0]);
  if (position) req.set_position(*position);
  brt::v1::Session session;
  auto ctx = (*conn)->NewContext(false, ids[0]);
  if (absl::Status s =
          (*conn)->Check((*conn)->brt().ForkSession(ctx.get(), req, &session), "ForkSession");
      !s.ok()) {
    return Fail(s);
  }
  PrintSession(session, json);
  return 0;
}

int RunRewind(const Args& args) {
  ConnectionOptions conn_options;
  bool json = false;
  std::vector<std::string> positionals;
  ArgParser parser("brt rewind", "[options] SESSION_ID POSITION",
                   "Rewinds an idle session to an earlier position, exactly: it then equals a\n"
                   "session that read only the tokens before POSITION (1 = the start). The server\n"
                   "restores its newest checkpoint at or before POSITION and re-reads the few\n"
                   "tokens after it. `brt sessions info` shows how far back it can go\n"
                   "(earliest_rewind_position).");
  parser.SetPositionals(&positionals, 2, 2, "SESSION_ID POSITION");
  parser.AddFlag("json", &json, "print the session as JSON");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;
  uint64_t position = 0;
  if (!absl::SimpleAtoi(positionals[1], &position) || position == 0) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("POSITION must be a positive integer, got \"", positionals[1], "\"")));
  }
  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  brt::v1::RewindSessionRequest req;
  req.set_session_id(positionals[0]);
  req.set_position(position);
  brt::v1::Session session;
  auto ctx = (*conn)->NewContext(false, positionals[0]);
  if (absl::Status s =
          (*conn)->Check((*conn)->brt().RewindSession(ctx.get(), req, &session), "RewindSession");
      !s.ok()) {
    return Fail(s);
  }
  PrintSession(session, json);
  return 0;
}

int RunSnapshots(const Args& args) {
  ConnectionOptions conn_options;
  bool json = false;
  std::vector<std::string> positionals;
  ArgParser parser("brt snapshots", "list|delete [KEY...] [options]",
                   "The server's snapshot store.\n\n"
                   "brt snapshots list          list the keys (session ids) of stored snapshots\n"
                   "brt snapshots delete KEY... delete stored snapshots (not loaded sessions)\n");
  parser.SetPositionals(&positionals, 1, -1, "");
  parser.AddFlag("json", &json, "print JSON");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;
  const std::string verb = positionals[0];
  const std::vector<std::string> keys(positionals.begin() + 1, positionals.end());
  if (verb != "list" && verb != "delete") {
    return UsageError("brt snapshots",
                      absl::StrCat("unknown action '", verb, "' (list or delete)"));
  }
  if (verb == "list" && !keys.empty()) return UsageError("brt snapshots", "`list` takes no KEY");
  if (verb == "delete" && keys.empty()) return UsageError("brt snapshots", "`delete` needs a KEY");

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  Connection& c = **conn;
  if (verb == "list") {
    brt::v1::ListSnapshotsResponse resp;
    auto ctx = c.NewContext(false);
    if (absl::Status s = c.Check(c.brt().ListSnapshots(ctx.get(), {}, &resp), "ListSnapshots");
        !s.ok()) {
      return Fail(s);
    }
    if (json) {
      PrintJson(std::vector<std::string>(resp.snapshot_keys().begin(), resp.snapshot_keys().end()));
    } else {
      for (const std::string& k : resp.snapshot_keys()) std::printf("%s\n", k.c_str());
    }
    return 0;
  }
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& key : keys) {
    brt::v1::DeleteSnapshotRequest req;
    req.set_snapshot_key(key);
    brt::v1::DeleteSnapshotResponse resp;
    auto ctx = c.NewContext(false);
    if (absl::Status s = c.Check(c.brt().DeleteSnapshot(ctx.get(), req, &resp), "DeleteSnapshot");
        !s.ok()) {
      return Fail(s);
    }
    if (!json) std::printf("deleted snapshot %s\n", key.c_str());
    out.push_back({{"deleted", key}});
  }
  if (json) PrintJson(out);
  return 0;
}

}  // namespace brt::client
