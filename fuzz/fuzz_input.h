#pragma once

// Splitting one fuzz input into several fields.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace iot::fuzz {

/// Reads '\n'-separated fields from the fuzz input; the last field takes the rest.
class Fields {
 public:
  Fields(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}

  /// The next field (up to '\n'), or what is left when there is no '\n'.
  std::string_view Next() {
    const size_t nl = rest_.find('\n');
    const std::string_view field = rest_.substr(0, nl);
    rest_ = nl == std::string_view::npos ? std::string_view() : rest_.substr(nl + 1);
    return field;
  }
  /// Everything not taken yet.
  [[nodiscard]] std::string_view Rest() const { return rest_; }

 private:
  std::string_view rest_;
};

/// An invariant of the code under test: a violation is a crash the fuzzer reports.
inline void Require(bool condition) {
  if (!condition) {
    __builtin_trap();
  }
}

}  // namespace iot::fuzz
