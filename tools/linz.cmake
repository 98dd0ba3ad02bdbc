# kvdb-linz: check recorded client histories (test/lib/history.h format) for linearizability.
# kv_testlib_linz is declared in test/lib/CMakeLists.txt (targets resolve at generate time, so
# the later definition is fine).
kv_program(kvdb-linz SOURCES kvdb_linz.c LIBS kv_testlib_linz)
target_include_directories(kvdb-linz PRIVATE ${PROJECT_SOURCE_DIR})
