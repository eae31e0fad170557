// RedisServer: a real redis-server child process on a free loopback port, with persistence off
// (--save '' --appendonly no) and its files in a temporary directory; stopped (SIGTERM, then SIGKILL) on
// destruction. Tests skip when the binary is missing.
#ifndef BRT_TESTS_CPP_PERSISTENCE_REDIS_SERVER_H_
#define BRT_TESTS_CPP_PERSISTENCE_REDIS_SERVER_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/persistence/redis_snapshot_store.h"
#include "tests/cpp/persistence/test_util.h"

#ifndef BRT_REDIS_SERVER
#define BRT_REDIS_SERVER "/usr/bin/redis-server"
#endif

namespace brt::persistence::testing {

inline int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

class RedisServer {
 public:
  static bool Available() { return ::access(BRT_REDIS_SERVER, X_OK) == 0; }

  RedisServer() : port_(FreeLoopbackPort()) {}
  ~RedisServer() { Stop(); }

  int port() const { return port_; }
  RedisStoreConfig Config(std::string prefix = "test:") const {
    RedisStoreConfig c;
    c.host = "127.0.0.1";
    c.port = port_;
    c.prefix = std::move(prefix);
    c.connect_timeout_ms = 500;
    c.command_timeout_ms = 2000;
    return c;
  }

  // Starts the server and waits (up to 10 s) until it answers PING.
  bool Start() {
    const std::string port = std::to_string(port_);
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      const int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::execl(BRT_REDIS_SERVER, BRT_REDIS_SERVER, "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", dir_.path().c_str(), "--daemonize", "no", "--protected-mode", "no",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (RedisSnapshotStore::Create(Config()).ok()) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Freezes the server (SIGSTOP): connections are accepted by the kernel, commands get no answer.
  void Pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void Resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);  // a paused server could not act on SIGTERM
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 250; ++i) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  TempDir dir_;
  int port_;
  pid_t pid_ = -1;
};

}  // namespace brt::persistence::testing

#endif  // BRT_TESTS_CPP_PERSISTENCE_REDIS_SERVER_H_
