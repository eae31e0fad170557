#include "server/persistence/file_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "server/persistence/absl_compat.h"

namespace brt::persistence {
namespace {

absl::Status Errno(int err, absl::string_view what, const std::string& path) {
  return IoError(err, absl::StrCat(what, " ", path));
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Append(std::string_view data) override {
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return Errno(errno, "write", path_);
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (::fdatasync(fd_) != 0) return Errno(errno, "fdatasync", path_);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    const int fd = fd_;
    fd_ = -1;
    // close(2) must not be retried on EINTR on Linux: the descriptor is gone either way.
    if (::close(fd) != 0 && errno != EINTR) return Errno(errno, "close", path_);
    return absl::OkStatus();
  }

 private:
  int fd_;
  std::string path_;
};

class PosixFileEnv : public FileEnv {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    int fd;
    do {
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return Errno(errno, "create", path);
    return std::make_unique<PosixWritableFile>(fd, path);
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    int fd;
    do {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return Errno(errno, "open", path);
    struct FdCloser {
      int fd;
      ~FdCloser() { ::close(fd); }
    } closer{fd};
    struct stat st;
    if (::fstat(fd, &st) != 0) return Errno(errno, "fstat", path);
    if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path, " is ", size, " bytes, more than the limit of ", max_bytes));
    }
    std::string out(size, '\0');
    size_t got = 0;
    while (got < size) {
      const ssize_t n = ::read(fd, out.data() + got, size - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Errno(errno, "read", path);
      }
      if (n == 0) break;  // shrank while reading; return what is there, the decoder will judge it
      got += static_cast<size_t>(n);
    }
    out.resize(got);
    return out;
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return Errno(errno, absl::StrCat("rename ", from, " to"), to);
    return absl::OkStatus();
  }

  absl::Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Errno(errno, "unlink", path);
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& dir) override {
    int fd;
    do {
      fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return Errno(errno, "open directory", dir);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return Errno(err, "fsync directory", dir);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return Errno(errno, "opendir", dir);
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
      errno = 0;
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) return Errno(err, "readdir", dir);
    return names;
  }

  absl::Status CreateDirs(const std::string& dir) override {
    if (dir.empty()) return absl::InvalidArgumentError("empty directory path");
    // Create each prefix ending at a '/', then the whole path.
    for (size_t i = 1; i <= dir.size(); ++i) {
      if (i != dir.size() && dir[i] != '/') continue;
      const std::string prefix = dir.substr(0, i);
      if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return Errno(errno, "mkdir", prefix);
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return Errno(errno, "stat", dir);
    if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat(dir, " is not a directory"));
    return absl::OkStatus();
  }
};

}  // namespace

absl::Status IoError(int err, std::string_view what) {
  absl::Status s = absl::ErrnoToStatus(err, AsAbsl(what));
  if (absl::IsUnknown(s)) return absl::InternalError(s.message());
  return s;
}

FileEnv* FileEnv::Default() {
  static FileEnv* const env = new PosixFileEnv();
  return env;
}

}  // namespace brt::persistence
