# kvdb-compactor: the Kubernetes apiserver compaction pattern, as a client example.
kv_program(kvdb-compactor SOURCES ${CMAKE_CURRENT_LIST_DIR}/compactor.c LIBS kv_client)
target_include_directories(kvdb-compactor PRIVATE ${PROJECT_SOURCE_DIR})
