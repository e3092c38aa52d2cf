// Paths of the WAT test guests assembled at build time (tests/guest/CMakeLists.txt).
#pragma once

#include <string>

namespace witmq::guest::testing {

inline std::string wasm_path(const std::string& stem) {
  return std::string(WITMQ_GUEST_WASM_DIR) + "/" + stem + ".wasm";
}

}  // namespace witmq::guest::testing
