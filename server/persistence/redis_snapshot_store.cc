#include "server/persistence/redis_snapshot_store.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "server/persistence/absl_compat.h"

namespace brt::persistence {
namespace {

timeval ToTimeval(int64_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

// Glob-escapes `s` for SCAN MATCH, so a prefix such as "brt:*" matches literally.
std::string GlobEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

absl::Status ErrorReplyToStatus(absl::string_view err, absl::string_view what) {
  std::string msg = absl::StrCat("redis error ", what, ": ", err);
  if (absl::StartsWith(err, "OOM")) return absl::ResourceExhaustedError(msg);
  for (absl::string_view transient : {"LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN"}) {
    if (absl::StartsWith(err, transient)) return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

bool PercentDecode(absl::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    int value = 0;
    if (i + 2 >= in.size()) return false;
    for (size_t j = i + 1; j <= i + 2; ++j) {
      const char c = in[j];
      const int digit = (c >= '0' && c <= '9') ? c - '0'
                        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
      if (digit < 0) return false;
      value = value * 16 + digit;
    }
    out->push_back(static_cast<char>(value));
    i += 2;
  }
  return true;
}

}  // namespace

absl::Status ParseRedisUri(std::string_view uri_in, RedisStoreConfig* config) {
  const absl::string_view uri = AsAbsl(uri_in);
  constexpr absl::string_view kScheme = "redis://";
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad redis store URI (", why,
        "); expected redis://[:password@]host[:port][/db][?prefix=P&connect_timeout_ms=N&timeout_ms=N&pool=N]"));
  };
  if (!absl::StartsWith(uri, kScheme)) return bad("it does not start with redis://");
  absl::string_view rest = uri.substr(kScheme.size());
  absl::string_view query;
  if (size_t q = rest.find('?'); q != absl::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  absl::string_view path;
  if (size_t slash = rest.find('/'); slash != absl::string_view::npos) {
    path = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  if (size_t at = rest.rfind('@'); at != absl::string_view::npos) {
    absl::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = userinfo.find(':');
    if (colon == absl::string_view::npos) return bad("credentials must be written ':password@'");
    if (!PercentDecode(userinfo.substr(colon + 1), &config->password)) return bad("bad %-escape in the password");
  }
  absl::string_view host = rest, port;
  if (absl::StartsWith(rest, "[")) {  // [ipv6]:port
    size_t close = rest.find(']');
    if (close == absl::string_view::npos) return bad("unclosed '[' in the host");
    host = rest.substr(1, close - 1);
    absl::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("junk after ']'");
      port = after.substr(1);
    }
  } else if (size_t colon = rest.rfind(':'); colon != absl::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("no host");
  config->host = std::string(host);
  if (!port.empty()) {
    int p = 0;
    if (!absl::SimpleAtoi(port, &p) || p < 1 || p > 65535) return bad(absl::StrCat("port '", port, "'"));
    config->port = p;
  }
  if (!path.empty()) {
    int db = 0;
    if (!absl::SimpleAtoi(path, &db) || db < 0) return bad(absl::StrCat("database '", path, "' is not a number"));
    config->db = db;
  }
  if (!query.empty()) {
    for (absl::string_view param : absl::StrSplit(query, '&', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(param, absl::MaxSplits('=', 1));
      std::string value;
      if (!PercentDecode(kv.second, &value)) return bad(absl::StrCat("bad %-escape in ", kv.first));
      int64_t ms = 0;
      if (kv.first == "prefix") {
        config->prefix = value;
      } else if (kv.first == "connect_timeout_ms" || kv.first == "timeout_ms") {
        if (!absl::SimpleAtoi(value, &ms) || ms <= 0) return bad(absl::StrCat(kv.first, " must be a positive integer"));
        (kv.first == "timeout_ms" ? config->command_timeout_ms : config->connect_timeout_ms) = ms;
      } else if (kv.first == "pool") {
        if (!absl::SimpleAtoi(value, &ms) || ms < 1 || ms > 64) return bad("pool must be an integer in [1, 64]");
        config->pool_size = static_cast<int>(ms);
      } else {
        return bad(absl::StrCat("unknown parameter '", kv.first, "'"));
      }
    }
  }
  return absl::OkStatus();
}

void RedisSnapshotStore::ReplyDeleter::operator()(redisReply* r) const { freeReplyObject(r); }

RedisSnapshotStore::RedisSnapshotStore(const RedisStoreConfig& config) : config_(config) {}

RedisSnapshotStore::~RedisSnapshotStore() {
  absl::MutexLock lock(&mu_);
  for (redisContext* c : idle_) redisFree(c);
  idle_.clear();
}

absl::StatusOr<std::unique_ptr<RedisSnapshotStore>> RedisSnapshotStore::Create(const RedisStoreConfig& config) {
  auto store = std::unique_ptr<RedisSnapshotStore>(new RedisSnapshotStore(config));
  auto pong = store->Command({"PING"}, "PING");
  if (!pong.ok()) return pong.status();
  return store;
}

std::string RedisSnapshotStore::Describe() const {
  return absl::StrCat("redis://", config_.host, ":", config_.port, "/", config_.db, " prefix '", config_.prefix, "'");
}

absl::StatusOr<redisContext*> RedisSnapshotStore::Connect() const {
  redisContext* c = redisConnectWithTimeout(config_.host.c_str(), config_.port,
                                            ToTimeval(config_.connect_timeout_ms));
  if (c == nullptr) return absl::UnavailableError(absl::StrCat(Describe(), " unreachable: out of memory"));
  if (c->err != 0) {
    absl::Status s = absl::UnavailableError(absl::StrCat(Describe(), " unreachable: ", c->errstr));
    redisFree(c);
    return s;
  }
  if (redisSetTimeout(c, ToTimeval(config_.command_timeout_ms)) != REDIS_OK) {
    absl::Status s = absl::UnavailableError(absl::StrCat(Describe(), ": cannot set timeout: ", c->errstr));
    redisFree(c);
    return s;
  }
  // AUTH and SELECT on the fresh connection before anyone uses it.
  auto setup = [&](std::vector<std::string> argv, absl::string_view what) -> absl::Status {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const std::string& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data())));
    if (r == nullptr) return absl::UnavailableError(absl::StrCat(Describe(), ": ", what, " failed: ", c->errstr));
    if (r->type == REDIS_REPLY_ERROR) {
      absl::Status s = ErrorReplyToStatus(absl::string_view(r->str, r->len), what);
      // A refused AUTH or SELECT is a configuration error, not an outage.
      return absl::IsInternal(s) ? absl::FailedPreconditionError(s.message()) : s;
    }
    return absl::OkStatus();
  };
  absl::Status s;
  if (!config_.password.empty()) s = setup({"AUTH", config_.password}, "AUTH");
  if (s.ok() && config_.db != 0) s = setup({"SELECT", std::to_string(config_.db)}, "SELECT");
  if (!s.ok()) {
    redisFree(c);
    return s;
  }
  return c;
}

absl::StatusOr<redisContext*> RedisSnapshotStore::Borrow(std::chrono::steady_clock::time_point deadline,
                                                         absl::string_view what) {
  {
    absl::MutexLock lock(&mu_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < config_.pool_size;
    };
    const auto wait = deadline - std::chrono::steady_clock::now();
    if (!mu_.AwaitWithTimeout(absl::Condition(&available), absl::FromChrono(wait))) {
      return absl::UnavailableError(absl::StrCat(
          Describe(), ": ", what, " waited ",
          std::chrono::duration_cast<std::chrono::milliseconds>(wait).count(),
          " ms for a connection: all ", config_.pool_size,
          " are busy (raise pool=N in the store URI, or check that Redis answers)"));
    }
    if (!idle_.empty()) {
      redisContext* c = idle_.back();
      idle_.pop_back();
      return c;
    }
    ++open_;  // reserved; opened below without the lock
  }
  auto c = Connect();
  if (!c.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
  }
  return c;
}

void RedisSnapshotStore::Return(redisContext* c, bool healthy) {
  const bool keep = healthy && c->err == 0;
  if (!keep) redisFree(c);
  absl::MutexLock lock(&mu_);
  if (keep) {
    idle_.push_back(c);
  } else {
    --open_;
  }
}

absl::StatusOr<RedisSnapshotStore::Reply> RedisSnapshotStore::Command(
    const std::vector<absl::string_view>& argv, absl::string_view what) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (absl::string_view a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  using Clock = std::chrono::steady_clock;
  const Clock::time_point call_deadline = ScopedStoreDeadline::Current();
  absl::Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const Clock::time_point now = Clock::now();
    const Clock::time_point deadline =
        std::min(call_deadline, now + std::chrono::milliseconds(config_.command_timeout_ms));
    if (deadline <= now) {
      return absl::DeadlineExceededError(
          absl::StrCat(Describe(), ": ", what, " not sent: the request's deadline has passed"));
    }
    auto c = Borrow(deadline, what);
    if (!c.ok()) return c.status();
    const int64_t budget_ms = std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (redisSetTimeout(*c, ToTimeval(budget_ms)) != REDIS_OK) {
      last = absl::UnavailableError(absl::StrCat(Describe(), ": cannot set timeout: ", (*c)->errstr));
      Return(*c, false);
      continue;
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(*c, static_cast<int>(argv.size()), ptrs.data(), lens.data())));
    if (r == nullptr) {
      // The connection failed (reset, EOF, timeout): close it and retry once on another, unless the
      // request's deadline ran out. A command that used up its whole timeout is not retried either: a
      // hung Redis costs one timeout, not two.
      const Clock::time_point failed_at = Clock::now();
      const bool out_of_time = failed_at >= call_deadline;
      last = out_of_time ? absl::DeadlineExceededError(absl::StrCat(
                               Describe(), ": ", what, " did not finish before the request's deadline"))
                         : absl::UnavailableError(absl::StrCat(Describe(), ": ", what, " failed: ", (*c)->errstr));
      Return(*c, false);
      if (out_of_time || failed_at >= deadline) return last;
      continue;
    }
    Return(*c, true);
    if (r->type == REDIS_REPLY_ERROR) return ErrorReplyToStatus(absl::string_view(r->str, r->len), what);
    return r;
  }
  return last;
}

absl::Status RedisSnapshotStore::CheckPut(std::string_view key_in, std::string_view bytes_in) const {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  if (bytes_in.size() > config_.max_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot '", key, "' is ", bytes_in.size(),
                                                     " bytes, more than the store's limit of ",
                                                     config_.max_value_bytes));
  }
  return absl::OkStatus();
}

absl::Status RedisSnapshotStore::Put(std::string_view key_in, std::string_view bytes_in) {
  const absl::string_view key = AsAbsl(key_in), bytes = AsAbsl(bytes_in);
  if (absl::Status s = CheckPut(key_in, bytes_in); !s.ok()) return s;
  const std::string full = absl::StrCat(config_.prefix, key);
  auto r = Command({"SET", full, bytes}, absl::StrCat("SET '", key, "'"));
  return r.status();
}

absl::StatusOr<std::string> RedisSnapshotStore::Get(std::string_view key_in) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  const std::string full = absl::StrCat(config_.prefix, key);
  auto r = Command({"GET", full}, absl::StrCat("GET '", key, "'"));
  if (!r.ok()) return r.status();
  if ((*r)->type == REDIS_REPLY_NIL) return absl::NotFoundError(absl::StrCat("no snapshot '", key, "' in ", Describe()));
  if ((*r)->type != REDIS_REPLY_STRING) {
    return absl::InternalError(absl::StrCat("GET '", key, "' returned reply type ", (*r)->type));
  }
  if ((*r)->len > config_.max_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot '", key, "' is ", (*r)->len,
                                                     " bytes, more than the store's limit of ",
                                                     config_.max_value_bytes));
  }
  return std::string((*r)->str, (*r)->len);
}

absl::Status RedisSnapshotStore::Delete(std::string_view key_in) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  const std::string full = absl::StrCat(config_.prefix, key);
  auto r = Command({"DEL", full}, absl::StrCat("DEL '", key, "'"));
  if (!r.ok()) return r.status();
  if ((*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 0) {
    return absl::NotFoundError(absl::StrCat("no snapshot '", key, "' in ", Describe()));
  }
  return absl::OkStatus();
}

namespace {

// KEYS[1] lease, ARGV[1] owner, ARGV[2] ttl ms. 1 = held by owner now; else the holder's name.
constexpr char kAcquireScript[] = R"lua(
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return holder
)lua";

// KEYS[1] lease, ARGV[1] owner.
constexpr char kReleaseScript[] = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
)lua";

// KEYS[1] lease, KEYS[2] snapshot, ARGV[1] owner, ARGV[2] ttl ms, ARGV[3] value.
constexpr char kPutLeasedScript[] = R"lua(
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3])
  return 1
end
return holder
)lua";

}  // namespace

absl::StatusOr<bool> RedisSnapshotStore::AcquireLease(std::string_view key_in, std::string_view owner,
                                                      int64_t ttl_ms, std::string* holder) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  const std::string lease = absl::StrCat("lease:", config_.prefix, key);
  const std::string ttl = absl::StrCat(std::max<int64_t>(ttl_ms, 1));
  auto r = Command({"EVAL", kAcquireScript, "1", lease, AsAbsl(owner), ttl},
                         absl::StrCat("lease '", key, "'"));
  if (!r.ok()) return r.status();
  if ((*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 1) return true;
  if ((*r)->type == REDIS_REPLY_STRING) {
    if (holder != nullptr) *holder = std::string((*r)->str, (*r)->len);
    return false;
  }
  return absl::InternalError(absl::StrCat("lease '", key, "' returned reply type ", (*r)->type));
}

absl::Status RedisSnapshotStore::ReleaseLease(std::string_view key_in, std::string_view owner) {
  const absl::string_view key = AsAbsl(key_in);
  if (absl::Status s = ValidateSnapshotKey(key_in); !s.ok()) return s;
  const std::string lease = absl::StrCat("lease:", config_.prefix, key);
  return Command({"EVAL", kReleaseScript, "1", lease, AsAbsl(owner)},
                       absl::StrCat("release lease '", key, "'"))
      .status();
}

absl::Status RedisSnapshotStore::PutLeased(std::string_view key_in, std::string_view bytes_in,
                                           std::string_view owner, int64_t ttl_ms) {
  const absl::string_view key = AsAbsl(key_in), bytes = AsAbsl(bytes_in);
  if (absl::Status s = CheckPut(key_in, bytes_in); !s.ok()) return s;
  const std::string lease = absl::StrCat("lease:", config_.prefix, key);
  const std::string full = absl::StrCat(config_.prefix, key);
  const std::string ttl = absl::StrCat(std::max<int64_t>(ttl_ms, 1));
  auto r = Command({"EVAL", kPutLeasedScript, "2", lease, full, AsAbsl(owner), ttl, bytes},
                         absl::StrCat("SET '", key, "' (leased)"));
  if (!r.ok()) return r.status();
  if ((*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 1) return absl::OkStatus();
  if ((*r)->type == REDIS_REPLY_STRING) {
    return absl::AbortedError(absl::StrCat("snapshot '", key, "' was not written: replica ",
                                           std::string((*r)->str, (*r)->len),
                                           " holds the session's lease"));
  }
  return absl::InternalError(absl::StrCat("SET '", key, "' (leased) returned reply type ", (*r)->type));
}

absl::StatusOr<std::vector<std::string>> RedisSnapshotStore::List() {
  const std::string pattern = absl::StrCat(GlobEscape(config_.prefix), "*");
  std::set<std::string> keys;  // SCAN may return a key more than once
  std::string cursor = "0";
  do {
    auto r = Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}, "SCAN");
    if (!r.ok()) return r.status();
    const redisReply* reply = r->get();
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_ARRAY) {
      return absl::InternalError("SCAN returned an unexpected reply shape");
    }
    cursor.assign(reply->element[0]->str, reply->element[0]->len);
    const redisReply* batch = reply->element[1];
    for (size_t i = 0; i < batch->elements; ++i) {
      const redisReply* e = batch->element[i];
      if (e->type != REDIS_REPLY_STRING) continue;
      absl::string_view full(e->str, e->len);
      if (!absl::StartsWith(full, config_.prefix)) continue;
      absl::string_view key = full.substr(config_.prefix.size());
      if (ValidateSnapshotKey(std::string_view(key.data(), key.size())).ok()) keys.emplace(key);
    }
  } while (cursor != "0");
  return std::vector<std::string>(keys.begin(), keys.end());
}

}  // namespace brt::persistence
