# Sanitizers (cmake_template's Sanitizers.cmake idea): IOT_SANITIZERS is a list of
# `address`, `undefined`, `thread`, `leak` (presets `asan` = address;undefined, `tsan` = thread).
# They go on iot::options, which every project target links, so the libraries, the services,
# the broker plugin and the tests are all instrumented alike. Third-party libraries (Debian's)
# are not: their reports are suppressed only through the files in .sanitizers/, each entry with
# its reason.
#
# IOT_FUZZ=ON (preset `fuzz`, clang only) instruments everything for libFuzzer
# (-fsanitize=fuzzer-no-link plus address and undefined) and builds the fuzz targets in fuzz/.
set(IOT_SANITIZERS "" CACHE STRING "Sanitizers for every target: address;undefined | thread")
option(IOT_FUZZ "Build the libFuzzer targets (clang: preset fuzz)" OFF)

set(iot_sanitize_flags "")
if(IOT_SANITIZERS)
  if("thread" IN_LIST IOT_SANITIZERS AND "address" IN_LIST IOT_SANITIZERS)
    message(FATAL_ERROR "IOT_SANITIZERS: thread and address cannot be combined")
  endif()
  list(JOIN IOT_SANITIZERS "," iot_sanitize_list)
  list(APPEND iot_sanitize_flags -fsanitize=${iot_sanitize_list})
endif()
if(IOT_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "IOT_FUZZ needs clang (libFuzzer): use the preset `fuzz`")
  endif()
  list(APPEND iot_sanitize_flags -fsanitize=fuzzer-no-link,address,undefined)
  set(IOT_SANITIZERS "address;undefined")
endif()

if(iot_sanitize_flags)
  # Undefined behaviour stops the program (a test fails) instead of printing and going on.
  if("undefined" IN_LIST IOT_SANITIZERS)
    list(APPEND iot_sanitize_flags -fno-sanitize-recover=undefined)
  endif()
  list(APPEND iot_sanitize_flags -fno-omit-frame-pointer)
  target_compile_options(iot_options INTERFACE ${iot_sanitize_flags})
  target_link_options(iot_options INTERFACE ${iot_sanitize_flags})
  message(STATUS "Sanitizers: ${iot_sanitize_flags}")

  # The runtime a non-instrumented program (mosquitto) must preload to load the instrumented
  # broker plugin: the tests and scripts/stack.sh put it in LD_PRELOAD.
  set(iot_runtime "")
  if("address" IN_LIST IOT_SANITIZERS)
    set(iot_runtime libasan.so)
  elseif("thread" IN_LIST IOT_SANITIZERS)
    set(iot_runtime libtsan.so)
  endif()
  if(iot_runtime AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=${iot_runtime}
                    OUTPUT_VARIABLE IOT_SANITIZER_RUNTIME OUTPUT_STRIP_TRAILING_WHITESPACE)
    file(REAL_PATH "${IOT_SANITIZER_RUNTIME}" IOT_SANITIZER_RUNTIME)
    file(WRITE ${CMAKE_BINARY_DIR}/lib/sanitizer-preload "${IOT_SANITIZER_RUNTIME}\n")
  endif()
else()
  file(REMOVE ${CMAKE_BINARY_DIR}/lib/sanitizer-preload)
endif()
