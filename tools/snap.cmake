# Snapshot tools: snapbench (create + loopback stream/install figures for docs/bench-snap.md).
kv_program(snapbench SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/snapbench.c
           LIBS kv_snap kv_dep_leveldb Threads::Threads)
