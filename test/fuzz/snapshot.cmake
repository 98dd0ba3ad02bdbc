# Snapshot decoders (manifest, chunk, ack); the corpus (fuzz_snap_corpus/, made by a
# throwaway generator over the real encoders) holds one valid encoding of each.
kv_fuzz(fuzz_snap_decode SOURCES fuzz_snap_decode.c LIBS kv_snap
        CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_snap_corpus)
