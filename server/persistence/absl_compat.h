// The Abseil here (20220623, Debian) is built with its own absl::string_view
// (ABSL_OPTION_USE_STD_STRING_VIEW 0), to which std::string_view does not convert implicitly. This library's
// API uses std::string_view; AsAbsl bridges to StrCat, StartsWith and friends inside the .cc files.
#ifndef BRT_SERVER_PERSISTENCE_ABSL_COMPAT_H_
#define BRT_SERVER_PERSISTENCE_ABSL_COMPAT_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace brt::persistence {

inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace brt::persistence

#endif  // BRT_SERVER_PERSISTENCE_ABSL_COMPAT_H_
