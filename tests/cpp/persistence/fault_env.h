// FaultEnv: a FileEnv over the real file system that records every operation and fails the one a test
// chooses, the way LevelDB's fault-injection tests do. An Append fault writes half of the data first, like
// a full disk or a crash mid-write.
#ifndef BRT_TESTS_CPP_PERSISTENCE_FAULT_ENV_H_
#define BRT_TESTS_CPP_PERSISTENCE_FAULT_ENV_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/persistence/file_env.h"

namespace brt::persistence::testing {

enum class Op { kCreate, kAppend, kSync, kClose, kRename, kRemove, kSyncDir, kRead, kList, kMkdir };

inline const char* OpName(Op op) {
  switch (op) {
    case Op::kCreate: return "create";
    case Op::kAppend: return "append";
    case Op::kSync: return "sync";
    case Op::kClose: return "close";
    case Op::kRename: return "rename";
    case Op::kRemove: return "remove";
    case Op::kSyncDir: return "syncdir";
    case Op::kRead: return "read";
    case Op::kList: return "list";
    case Op::kMkdir: return "mkdir";
  }
  return "?";
}

class FaultEnv : public FileEnv {
 public:
  // The next operation of kind `op` fails with `error` (once).
  void FailNext(Op op, absl::Status error) {
    absl::MutexLock lock(&mu_);
    fail_op_ = op;
    fail_error_ = std::move(error);
    armed_ = true;
  }
  std::vector<std::string> Log() {
    absl::MutexLock lock(&mu_);
    return log_;
  }
  void ClearLog() {
    absl::MutexLock lock(&mu_);
    log_.clear();
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    if (absl::Status s = Record(Op::kCreate); !s.ok()) return s;
    auto file = base_->NewWritableFile(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<WritableFile>(new File(this, std::move(*file)));
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    if (absl::Status s = Record(Op::kRead); !s.ok()) return s;
    return base_->ReadFile(path, max_bytes);
  }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (absl::Status s = Record(Op::kRename); !s.ok()) return s;
    return base_->RenameFile(from, to);
  }
  absl::Status RemoveFile(const std::string& path) override {
    if (absl::Status s = Record(Op::kRemove); !s.ok()) return s;
    return base_->RemoveFile(path);
  }
  absl::Status SyncDir(const std::string& dir) override {
    if (absl::Status s = Record(Op::kSyncDir); !s.ok()) return s;
    return base_->SyncDir(dir);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    if (absl::Status s = Record(Op::kList); !s.ok()) return s;
    return base_->ListDir(dir);
  }
  absl::Status CreateDirs(const std::string& dir) override {
    if (absl::Status s = Record(Op::kMkdir); !s.ok()) return s;
    return base_->CreateDirs(dir);
  }

 private:
  class File : public WritableFile {
   public:
    File(FaultEnv* env, std::unique_ptr<WritableFile> base) : env_(env), base_(std::move(base)) {}
    absl::Status Append(std::string_view data) override {
      if (absl::Status s = env_->Record(Op::kAppend); !s.ok()) {
        base_->Append(data.substr(0, data.size() / 2)).IgnoreError();
        return s;
      }
      return base_->Append(data);
    }
    absl::Status Sync() override {
      if (absl::Status s = env_->Record(Op::kSync); !s.ok()) return s;
      return base_->Sync();
    }
    absl::Status Close() override {
      if (absl::Status s = env_->Record(Op::kClose); !s.ok()) {
        base_->Close().IgnoreError();
        return s;
      }
      return base_->Close();
    }

   private:
    FaultEnv* env_;
    std::unique_ptr<WritableFile> base_;
  };

  absl::Status Record(Op op) {
    absl::MutexLock lock(&mu_);
    log_.push_back(OpName(op));
    if (armed_ && op == fail_op_) {
      armed_ = false;
      return fail_error_;
    }
    return absl::OkStatus();
  }

  FileEnv* const base_ = FileEnv::Default();
  absl::Mutex mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  Op fail_op_ ABSL_GUARDED_BY(mu_) = Op::kCreate;
  absl::Status fail_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace brt::persistence::testing

#endif  // BRT_TESTS_CPP_PERSISTENCE_FAULT_ENV_H_
