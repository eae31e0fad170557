// ApiKeys and Authenticator (server/auth): the keys file's format and errors, constant-time matching,
// the resolution rules (key, certificate, unnamed tenant), quotas, and reloading.
#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"
#include "server/auth/api_keys.h"
#include "server/auth/authenticator.h"
#include "server/core/tenant.h"
#include "server/tokenizer/sha256.h"

namespace brt::auth {
namespace {

std::string Line(const std::string& tenant, const std::string& key, const std::string& extra = "") {
  return tenant + " " + Sha256Hex(key) + (extra.empty() ? "" : " " + extra) + "\n";
}

TEST(ApiKeysTest, ParsesTenantsDigestsQuotasAndComments) {
  auto keys = ApiKeys::Parse("# operators' keys\n\n" + Line("alice", "k1", "max_sessions=3") +
                             Line("bob", "k2") + "   " + Line("alice", "k3", "max_sessions=3") +
                             "  # trailing comment\n");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->entries().size(), 3u);
  ASSERT_NE(keys->Match("k1"), nullptr);
  EXPECT_EQ(keys->Match("k1")->tenant, "alice");
  EXPECT_EQ(keys->Match("k3")->tenant, "alice");
  EXPECT_EQ(keys->Match("k2")->tenant, "bob");
  EXPECT_EQ(keys->Match("k4"), nullptr);
  EXPECT_EQ(keys->Match(""), nullptr);
  EXPECT_EQ(*keys->FindTenant("alice")->max_sessions, 3u);
  EXPECT_FALSE(keys->FindTenant("bob")->max_sessions.has_value());
}

TEST(ApiKeysTest, ErrorsNameTheLineAndTheProblem) {
  struct Case {
    std::string text;
    std::string message;
  } cases[] = {
      {"alice\n", "line 1: a tenant and a key digest are required"},
      {"\nalice abc\n", "line 2: the digest must be 64 hex digits"},
      {"alice " + std::string(64, 'g') + "\n", "non-hex"},
      {"al-ice " + Sha256Hex("k") + "\n", "letters, digits and '_'"},
      {Line("alice", "k", "max_sessions=x"), "'max_sessions=x' is not NAME=NUMBER"},
      {Line("alice", "k", "burst=3"), "unknown option 'burst'"},
      {Line("alice", "k") + Line("bob", "k"), "line 2: this digest is listed twice"},
      {Line("alice", "k", "max_calls=1") + Line("alice", "j", "max_calls=2"), "other quotas"},
  };
  for (const Case& c : cases) {
    auto keys = ApiKeys::Parse(c.text);
    ASSERT_FALSE(keys.ok()) << c.text;
    EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(keys.status().message().find(c.message), std::string::npos) << keys.status();
    EXPECT_NE(keys.status().message().find("expected 'TENANT SHA256_HEX_OF_KEY"), std::string::npos);
  }
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void Write(const std::string& text) {
    std::ofstream(path_) << text;
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string path_ = ::testing::TempDir() + "/brt-keys-test.txt";
};

TEST_F(AuthenticatorTest, ResolvesKeysCertificatesAndTheUnnamedTenant) {
  Write(Line("alice", "k1", "max_calls=2"));
  AuthOptions options;
  options.api_keys_file = path_;
  options.mtls = true;
  options.default_max_sessions = 7;
  options.default_max_calls = 5;
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto t = (*auth)->Resolve("Bearer k1", std::nullopt);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->name, "alice");
  EXPECT_EQ(t->max_sessions, 7u);  // the default
  EXPECT_EQ(t->max_calls, 2u);     // the file's
  EXPECT_EQ((*auth)->Resolve("bearer  k1 ", std::nullopt)->name, "alice");
  // The key wins over the certificate; a certificate alone names the tenant.
  EXPECT_EQ((*auth)->Resolve("Bearer k1", "bob")->name, "alice");
  EXPECT_EQ((*auth)->Resolve(std::nullopt, "bob")->name, "bob");
  EXPECT_EQ((*auth)->Resolve(std::nullopt, "bob")->max_calls, 5u);
  for (const auto& [header, cert] :
       std::vector<std::pair<std::optional<std::string_view>, std::optional<std::string_view>>>{
           {"Bearer nope", std::nullopt}, {"k1", std::nullopt}, {"Basic k1", std::nullopt},
           {std::nullopt, std::nullopt}, {std::nullopt, "not a name"}}) {
    auto r = (*auth)->Resolve(header, cert);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  }
}

TEST_F(AuthenticatorTest, WithoutKeysOrMtlsEveryCallIsTheUnnamedTenant) {
  auto auth = Authenticator::Create(AuthOptions{});
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->required());
  EXPECT_EQ((*auth)->Resolve(std::nullopt, std::nullopt)->name, "");
  // A key sent to a server without keys is ignored (the openai SDKs always send one).
  EXPECT_EQ((*auth)->Resolve("Bearer k", std::nullopt)->name, "");
}

TEST_F(AuthenticatorTest, ReloadSwapsKeysAndKeepsThemOnError) {
  Write(Line("alice", "k1"));
  AuthOptions options;
  options.api_keys_file = path_;
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok());
  Write(Line("bob", "k2"));
  EXPECT_EQ(*(*auth)->Reload(), 1u);
  EXPECT_FALSE((*auth)->Resolve("Bearer k1", std::nullopt).ok());
  EXPECT_EQ((*auth)->Resolve("Bearer k2", std::nullopt)->name, "bob");
  Write("bob zzz\n");
  EXPECT_FALSE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->Resolve("Bearer k2", std::nullopt)->name, "bob");
  EXPECT_EQ((*auth)->tenant_names(), std::vector<std::string>{"bob"});
}

TEST(TenantTest, StoreKeysAreNamespacedAndValidated) {
  Tenant alice{"alice"};
  EXPECT_EQ(StoreKey(alice, "s_1"), "alice-s_1");
  EXPECT_EQ(StoreKey(Tenant{}, "s_1"), "s_1");
  EXPECT_EQ(*TenantKey(alice, "alice-s_1"), "s_1");
  EXPECT_FALSE(TenantKey(alice, "alice_b-s_1").has_value());
  EXPECT_FALSE(TenantKey(alice, "s_1").has_value());
  EXPECT_EQ(*TenantKey(Tenant{}, "alice-s_1"), "alice-s_1");
  EXPECT_TRUE(ValidateTenantName("team_42").ok());
  EXPECT_FALSE(ValidateTenantName("").ok());
  EXPECT_FALSE(ValidateTenantName("a-b").ok());
  EXPECT_FALSE(ValidateTenantName(std::string(49, 'a')).ok());
}

}  // namespace
}  // namespace brt::auth
