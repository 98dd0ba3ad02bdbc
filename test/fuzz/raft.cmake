# Raft: byte-scripted event sequences into raft_step on the cluster fixture; any violated
# safety invariant aborts.  No corpus: every input is a valid script.
kv_fuzz(fuzz_raft SOURCES fuzz_raft.c LIBS kv_test_cluster)
