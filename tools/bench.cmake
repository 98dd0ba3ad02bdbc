# kvdb-bench: the client load generator (etcd `benchmark` style); figures in docs/bench-server.md.
kv_program(kvdb-bench
           SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench.c ${CMAKE_CURRENT_LIST_DIR}/bench_run.c
                   ${CMAKE_CURRENT_LIST_DIR}/bench_hist.c
                   ${CMAKE_CURRENT_LIST_DIR}/bench_disk.c ${CMAKE_CURRENT_LIST_DIR}/bench_watch.c
           LIBS kv_client m Threads::Threads)
