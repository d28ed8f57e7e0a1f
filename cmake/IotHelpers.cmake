# iot_generate_protos(<target> PROTO_ROOT <dir> PROTOS <files...>)
# Generates C++ and gRPC sources into the binary dir, keeping the proto path so that
# headers are included as <iot/shadow/v1/shadow.grpc.pb.h>.
function(iot_generate_protos target)
  cmake_parse_arguments(ARG "" "PROTO_ROOT" "PROTOS" ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/gen)
  file(MAKE_DIRECTORY ${out})
  target_sources(${target} PRIVATE ${ARG_PROTOS})
  protobuf_generate(TARGET ${target} LANGUAGE cpp
    IMPORT_DIRS ${ARG_PROTO_ROOT} PROTOC_OUT_DIR ${out})
  protobuf_generate(TARGET ${target} LANGUAGE grpc
    GENERATE_EXTENSIONS .grpc.pb.h .grpc.pb.cc
    PLUGIN "protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>"
    IMPORT_DIRS ${ARG_PROTO_ROOT} PROTOC_OUT_DIR ${out})
  target_include_directories(${target} SYSTEM PUBLIC ${out})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf gRPC::grpc++)
endfunction()

# iot_embed_migrations(<target> <dir> <namespace>): compiles every NNN_name.sql under <dir>
# into the target as `std::vector<iot::common::Migration> <namespace>::EmbeddedMigrations()`;
# the SQL ships inside the binary so that images and replicas need no migration files on disk.
function(iot_embed_migrations target dir ns)
  file(GLOB sql_files CONFIGURE_DEPENDS ${dir}/*.sql)
  list(SORT sql_files)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${target}_migrations.cpp)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DNS=${ns} "-DFILES=${sql_files}"
            -P ${PROJECT_SOURCE_DIR}/cmake/EmbedMigrations.cmake
    DEPENDS ${sql_files} ${PROJECT_SOURCE_DIR}/cmake/EmbedMigrations.cmake
    COMMENT "Embedding migrations of ${target}"
    VERBATIM)
  target_sources(${target} PRIVATE ${out})
endfunction()

# iot_add_test(<name> SOURCES ... LIBS ... [LABELS ...])
function(iot_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest_main GTest::gmock
                                        iot::options iot::warnings)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

# iot_add_service(<name> BINARY <exe> SOURCES <lib sources...>)
# A service is a library `<name>_lib` (alias iot::<name>) plus a thin executable from
# src/main.cpp. migrations/*.sql, if present, are embedded as iot::<name>::EmbeddedMigrations().
function(iot_add_service name)
  cmake_parse_arguments(ARG "" "BINARY" "SOURCES" ${ARGN})
  add_library(${name}_lib STATIC ${ARG_SOURCES})
  add_library(iot::${name} ALIAS ${name}_lib)
  target_include_directories(${name}_lib PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(${name}_lib PUBLIC iot::common iot::proto PRIVATE iot::warnings)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/migrations)
    iot_embed_migrations(${name}_lib ${CMAKE_CURRENT_SOURCE_DIR}/migrations iot::${name})
  endif()
  add_executable(${ARG_BINARY} src/main.cpp)
  target_link_libraries(${ARG_BINARY} PRIVATE ${name}_lib iot::warnings)
  install(TARGETS ${ARG_BINARY} RUNTIME DESTINATION bin)
endfunction()
