# kvdb-lsmbench: lsm state machine figures (docs/bench-lsm.md).
kv_program(kvdb-lsmbench SOURCES ${CMAKE_CURRENT_LIST_DIR}/lsmbench.c LIBS kv_lsm)
