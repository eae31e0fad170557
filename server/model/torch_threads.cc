#include "server/model/torch_threads.h"

#include <dlfcn.h>

#include <ATen/Parallel.h>

// LibTorch exports this guard (a thread-local switch: XNNPACK and QNNPACK ops run on the calling thread
// instead of the shared pthreadpool), but Debian's libtorch-dev lacks its header
// (caffe2/utils/threadpool/pthreadpool-cpp.h), so it is declared here.
namespace caffe2 {
class _NoPThreadPoolGuard {
 public:
  static bool is_enabled();
  static void set_enabled(bool enabled);
};
}  // namespace caffe2

namespace brt {

void SetIntraOpThreads(int n) {
  at::internal::lazy_init_num_threads();
  at::set_num_threads(n);
}

void SetOpenMpThreads(int n) {
  using Fn = void (*)(int);
  static const Fn fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (fn != nullptr) fn(n);
}

void RunPoolOpsOnThisThread() { caffe2::_NoPThreadPoolGuard::set_enabled(true); }

}  // namespace brt
