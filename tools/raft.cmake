# Raft tools: kvdb-raftbench, the pure-CPU replication benchmark (docs/bench-raft.md).
kv_program(kvdb-raftbench SOURCES ${CMAKE_CURRENT_LIST_DIR}/raftbench.c LIBS kv_raft)
