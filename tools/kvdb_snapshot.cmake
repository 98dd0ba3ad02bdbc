# kvdb-snapshot: export/import/inspect snapshots.
kv_program(kvdb-snapshot SOURCES ${CMAKE_CURRENT_LIST_DIR}/kvdb_snapshot.c
           LIBS kv_srv kv_snap kv_lsm kv_wal kv_client)
if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
  target_compile_options(kvdb-snapshot PRIVATE -Wno-format-truncation)
endif()
