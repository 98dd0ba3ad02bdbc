/* Private to the cluster fixture: what cluster.c and cluster_check.c share. */
#ifndef KV_TEST_CLUSTER_INT_H
#define KV_TEST_CLUSTER_INT_H

#include "test/lib/cluster.h"

/* Record the first violated invariant (later ones are usually consequences). */
void test_cluster_fail(struct test_cluster *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
uint64_t test_cluster_mix(uint64_t a, uint64_t b);
uint64_t test_cluster_hash(const void *p, size_t n);

/* Checks run on every Ready (cluster.c drain()). */
void test_cluster_record_leader(struct test_cluster *c, raft_id id, raft_term term);
void test_cluster_check_leader_complete(struct test_cluster *c, struct test_node *n);
void test_cluster_check_leader_commit(struct test_cluster *c,
                                      struct test_node *n,
                                      const struct raft_ready *rd);
/* Apply one committed entry to @n's state machine, checking it against every earlier apply. */
void test_cluster_apply_entry(struct test_cluster *c,
                              struct test_node *n,
                              const struct raft_entry *e);
/* The state machine takes the snapshot's state. */
void test_cluster_install_snapshot(struct test_cluster *c,
                                   struct test_node *n,
                                   const struct raft_snap_meta *s);

#endif /* KV_TEST_CLUSTER_INT_H */
