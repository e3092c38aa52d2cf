# Building C guests (core wasm modules) with clang --target=wasm32-wasi, as external commands:
# the rest of the project is compiled by the host compiler (GCC), so the wasm toolchain is not a
# CMake language here. Requires Debian's clang, lld and wasi-libc (libclang-rt-*-dev-wasm32).
#
#   witmq_c_guest(<output.wasm> <source.c>)  adds a custom command producing <output.wasm>.
#
# WITMQ_WASM_CLANG is empty when no working wasm32-wasi clang was found; callers skip then.
# Included from every directory that builds guests (no include guard): the variables it sets are
# directory-scoped, and the toolchain probe runs once, its result cached.

find_program(WITMQ_WASM_CLANG NAMES clang-14 clang)
if(WITMQ_WASM_CLANG AND NOT DEFINED CACHE{WITMQ_WASM_CLANG_WORKS})
  set(_probe ${CMAKE_BINARY_DIR}/witmq_wasm_probe)
  file(WRITE ${_probe}.c "#include <stdlib.h>\nint probe(int n) { return (int)(size_t)malloc(n); }\n")
  execute_process(
    COMMAND ${WITMQ_WASM_CLANG} --target=wasm32-wasi -O2 -mexec-model=reactor ${_probe}.c
            -o ${_probe}.wasm
    RESULT_VARIABLE _probe_result OUTPUT_QUIET ERROR_QUIET)
  if(_probe_result EQUAL 0)
    set(WITMQ_WASM_CLANG_WORKS ON CACHE INTERNAL "clang can build wasm32-wasi reactors")
  else()
    set(WITMQ_WASM_CLANG_WORKS OFF CACHE INTERNAL "clang can build wasm32-wasi reactors")
  endif()
endif()
if(NOT WITMQ_WASM_CLANG_WORKS)
  set(WITMQ_WASM_CLANG "")
endif()

set(WITMQ_GUEST_SDK_DIR ${CMAKE_CURRENT_LIST_DIR}/../../sdk/c)

function(witmq_c_guest output source)
  get_filename_component(out_dir ${output} DIRECTORY)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${WITMQ_WASM_CLANG} --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Wextra
            -Werror -I${WITMQ_GUEST_SDK_DIR} ${source} -o ${output}
    DEPENDS ${source} ${WITMQ_GUEST_SDK_DIR}/witmq_guest.h
    COMMENT "clang --target=wasm32-wasi ${source}"
    VERBATIM)
endfunction()
