# Interface targets every project target links: language options and warnings.
add_library(iot_options INTERFACE)
add_library(iot::options ALIAS iot_options)
target_compile_features(iot_options INTERFACE cxx_std_20)
target_compile_definitions(iot_options INTERFACE IOT_VERSION="${PROJECT_VERSION}")

add_library(iot_warnings INTERFACE)
add_library(iot::warnings ALIAS iot_warnings)
target_compile_options(iot_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
  -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wpedantic
  -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)
if(IOT_WARNINGS_AS_ERRORS)
  target_compile_options(iot_warnings INTERFACE -Werror)
endif()
