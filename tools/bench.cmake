# kvdb-bench: the client load generator (etcd `benchmark` style); figures in docs/bench-server.md.
# Its parts are a small library so bench_unit can test the histogram, the in-flight table, key
# encoding and the reply check.
add_library(kv_bench STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_run.c
            ${CMAKE_CURRENT_LIST_DIR}/bench_hist.c ${CMAKE_CURRENT_LIST_DIR}/bench_disk.c
            ${CMAKE_CURRENT_LIST_DIR}/bench_watch.c)
kv_module(kv_bench)
target_link_libraries(kv_bench PUBLIC kv_client m Threads::Threads)

kv_program(kvdb-bench SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench.c LIBS kv_bench)

kv_test(bench_unit SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_test.c LIBS kv_bench)
