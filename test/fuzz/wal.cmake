# WAL segment/record decoder and replay (raw bytes, and checksummed scripts checked against a
# model).  No corpus: the target frames its own valid records in script mode.
kv_fuzz(fuzz_wal SOURCES fuzz_wal.c LIBS kv_wal)
