# WAL tools: kvdb-waldump (segments and records, reports damage) and kvdb-walbench (group
# commit throughput/latency beside raw write+fdatasync, replay speed).
kv_program(kvdb-waldump SOURCES waldump.c LIBS kv_wal)
target_include_directories(kvdb-waldump PRIVATE ${PROJECT_SOURCE_DIR})
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/walbench.c)
  kv_program(kvdb-walbench SOURCES walbench.c LIBS kv_wal)
endif()
