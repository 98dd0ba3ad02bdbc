/* build/bin/kvdb: one kvdb member. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "server/log.h"
#include "server/srv.h"

static struct srv *volatile the_srv;

static void on_signal(int sig)
{
    (void)sig;
    if (the_srv != NULL) {
        srv_stop(the_srv);
    }
}

/* Raise the soft fd limit to the hard one, as Go programs (etcd among them) do at start since Go
 * 1.19: a shell's soft default of 1024 would otherwise bound the clients a member serves. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: kvdb [flags]\n");
            srv_config_usage(stdout);
            return 0;
        }
    }
    struct srv_config cfg;
    char err[256] = "";
    srv_config_defaults(&cfg);
    if (srv_config_parse(&cfg, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "kvdb: %s\n", err);
        return 2;
    }
    raise_fd_limit();
    struct srv *opened = NULL;
    int rv = srv_open(&cfg, &opened, err);
    the_srv = opened;
    if (rv != 0) {
        fprintf(stderr, "kvdb: %s: %s\n", srv_strerror(rv), err);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf(
        "kvdb member '%s' is up. Talk to it with:\n"
        "  build/bin/kvctl --endpoints %s put greeting hello\n"
        "  build/bin/kvctl --endpoints %s get greeting\n"
        "Stop it with Ctrl-C.\n",
        cfg.name, cfg.advertise_client.text, cfg.advertise_client.text);
    fflush(stdout);
    rv = srv_run(the_srv);
    if (rv != 0) {
        fprintf(stderr, "kvdb: stopped on error: %s\n", srv_errmsg(the_srv));
    }
    /* No signal may reach a member being freed: ignore further ones while closing. */
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGINT, &ign, NULL);
    sigaction(SIGTERM, &ign, NULL);
    struct srv *s = the_srv;
    the_srv = NULL;
    srv_close(s);
    return rv == 0 ? 0 : 1;
}
