# Snapshot tools: snapbench (create + loopback stream/install figures for docs/bench-snap.md) and
# kvdb-snapdump (print, list and verify snapshots offline).
kv_program(snapbench SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/snapbench.c
           LIBS kv_snap kv_dep_leveldb Threads::Threads)
kv_program(kvdb-snapdump SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/snapdump.c LIBS kv_snap)
