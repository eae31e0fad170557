// kAddressSanitizerBuild: whether this translation unit is compiled with AddressSanitizer (GCC's
// __SANITIZE_ADDRESS__ or clang's __has_feature). The sanitizer build of tests/checks/run.sh loads the
// tokenizer shim differently and scales timing bounds by it. Thread safety: a constant.
#ifndef BRT_SERVER_TOKENIZER_SANITIZER_BUILD_H_
#define BRT_SERVER_TOKENIZER_SANITIZER_BUILD_H_

namespace brt {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizerBuild = true;
#else
inline constexpr bool kAddressSanitizerBuild = false;
#endif
#else
inline constexpr bool kAddressSanitizerBuild = false;
#endif

}  // namespace brt

#endif  // BRT_SERVER_TOKENIZER_SANITIZER_BUILD_H_
