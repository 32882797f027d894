/*
 * The control loop of a zygote, shared by the Python zygote (lockdown.c, called from
 * zygote.py) and the native one (native_zygote.c).
 *
 * Control messages (protocol.h, struct wire_control): worker -> zygote 'F' n: fork n
 * sandboxes, 'K' pid: kill it, 'W' pid: report how it ended, 'H' 0/1: whether sandboxes
 * forked from now on warm up (the child reads `warm`; the native zygote ignores it);
 * zygote -> worker 'C' pid + descriptors (the worker's end of the sandbox's channel and,
 * where the kernel has them, a pidfd), 'X' pid status.  Every single-use sandbox that
 * exits is replaced while fewer than `cap` single-use ones are alive, so a normal
 * invocation costs the worker no control message.  A reusable one (snapshotted) counts
 * toward no cap and is not replaced when it exits: the worker replaced it when it made it
 * reusable, and the engines bound how many there are.
 *
 * The loop is C so that, between forks, a zygote writes to nothing but this loop's state:
 * every page it shares copy-on-write with the sandboxes it has forked stays shared (a
 * Python loop would touch reference counts all over its heap, and each such write after a
 * fork is a page copy, or the split of a huge page).
 */
#ifndef DANDELION_ZYGOTE_LOOP_H
#define DANDELION_ZYGOTE_LOOP_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "protocol.h"
#ifdef ZYGOTE_SNAPSHOTS
#include "snapshot.h"
#define ZYGOTE_MAX_SNAPSHOTS 64
#endif

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* How much nicer than its zygote a sandbox runs: past saturation, when the sandboxes keep
 * every CPU busy, the zygote's resets (and the worker's frontend) run as soon as they are
 * due rather than waiting their turn behind the sandboxes, so that fewer invocations find
 * no reset sandbox ready and run on a fresh one (issue 19, bench_overload.py: +5 against
 * 0, in two A/B runs at load 10-12, fresh sandboxes 10.5 % against 14.6 % of invocations,
 * and 306 against 221 answers/s at twice the peak).  A sandbox cannot change it back (its
 * filter refuses setpriority). */
#define ZYGOTE_SANDBOX_NICE 5

#define ZYGOTE_MAX_LIVE 4096
#define ZYGOTE_DONE 1024
#define ZYGOTE_WANTED 256


struct zygote {
    int ctrl;               /* the control socket */
    int cap;                /* replace exited sandboxes while fewer single-use ones are
                               alive (zygote_single_use()) */
    int channel;            /* in a child: its end of its channel */
    int warm;               /* whether a sandbox forked now warms up ('H') */
    sigset_t mask;          /* the signal mask before the loop (restored in a child) */
    int sfd;                /* signalfd for SIGCHLD */
    pid_t live[ZYGOTE_MAX_LIVE];
    int n_live;
    pid_t done_pid[ZYGOTE_DONE];  /* how recently exited sandboxes ended */
    int done_status[ZYGOTE_DONE];
    unsigned n_done;        /* ever reaped; wraps, and 2^32 is a multiple of ZYGOTE_DONE */
    pid_t wanted[ZYGOTE_WANTED];  /* pids the worker asked about before they ended */
    int n_wanted;
#ifdef ZYGOTE_SNAPSHOTS
    long long cpu_ns;       /* a reusable sandbox is discarded once it used this much CPU */
    struct snapshot *snaps[ZYGOTE_MAX_SNAPSHOTS];  /* of the reusable sandboxes alive */
#endif
};

/* Send a control message with up to two descriptors (fd < 0: none; fd2 < 0: one). */
static int zygote_send(int ctrl, char op, int32_t a, int32_t b, int fd, int fd2) {
    struct wire_control m = {op, a, b};
    struct iovec iov = {.iov_base = &m, .iov_len = sizeof m};
    char cbuf[CMSG_SPACE(2 * sizeof(int))];
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        int fds[2] = {fd, fd2};
        int n = fd2 >= 0 ? 2 : 1;
        memset(cbuf, 0, sizeof cbuf);
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
    }
    return sendmsg(ctrl, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/*
 * Fork up to n sandboxes.  Returns 0 in a child (its channel end in z->channel, the signal
 * mask restored, the zygote's descriptors still open: the caller closes them), 1 in the
 * zygote, -1 in the zygote once the worker is gone.
 */
static int zygote_fork(struct zygote *z, int n) {
    for (int i = 0; i < n && i < 64 && z->n_live < ZYGOTE_MAX_LIVE; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            return 1;
        pid_t pid = fork();
        if (pid == 0) {
            setpriority(PRIO_PROCESS, 0, getpriority(PRIO_PROCESS, 0) + ZYGOTE_SANDBOX_NICE);
            sigprocmask(SIG_SETMASK, &z->mask, NULL);
            close(sv[0]);
            z->channel = sv[1];
            return 0;
        }
        close(sv[1]);
        if (pid < 0) {
            close(sv[0]);
            return 1;
        }
        z->live[z->n_live++] = pid;
        for (unsigned k = 0; k < ZYGOTE_DONE && k < z->n_done; k++)  /* pids are reused: what */
            if (z->done_pid[k] == pid)                           /* an earlier one did is */
                z->done_pid[k] = 0;                              /* stale */
        /* a pidfd lets the worker end the sandbox itself after its invocation; b: 1 if it
         * skips its warm-up (then it tracks nothing and cannot be snapshotted; 0 as an
         * extension built before b said so sends) */
        int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
        int sent = zygote_send(z->ctrl, WIRE_FORKED, pid, !z->warm, sv[0], pfd);
        if (pfd >= 0)
            close(pfd);
        close(sv[0]);
        if (sent < 0)
            return -1;
    }
    return 1;
}

#ifdef ZYGOTE_SNAPSHOTS
/* The slot of sandbox pid's snapshot (NULL: it has none, and none is free if !free_ok). */
static struct snapshot **zygote_snapshot(struct zygote *z, pid_t pid, int free_ok) {
    struct snapshot **free_slot = NULL;
    for (int i = 0; i < ZYGOTE_MAX_SNAPSHOTS; i++) {
        if (z->snaps[i] != NULL && z->snaps[i]->pid == pid)
            return &z->snaps[i];
        if (z->snaps[i] == NULL && free_slot == NULL)
            free_slot = &z->snaps[i];
    }
    return free_ok ? free_slot : NULL;
}
#endif

/* Sandboxes alive that are not reusable (have no snapshot): those the cap bounds. */
static int zygote_single_use(const struct zygote *z) {
    int n = z->n_live;
#ifdef ZYGOTE_SNAPSHOTS
    for (int i = 0; i < ZYGOTE_MAX_SNAPSHOTS; i++)
        n -= z->snaps[i] != NULL;
#endif
    return n;
}

/* Sandbox pid exited with status: forget it, tell the worker if it asked.  0, or -1 once
 * the worker is gone. */
static int zygote_ended(struct zygote *z, pid_t pid, int status) {
    for (int i = 0; i < z->n_live; i++)
        if (z->live[i] == pid) {
            z->live[i] = z->live[--z->n_live];
            break;
        }
#ifdef ZYGOTE_SNAPSHOTS
    struct snapshot **slot = zygote_snapshot(z, pid, 0);
    if (slot != NULL) {
        snapshot_free(*slot);
        *slot = NULL;
    }
#endif
    for (int i = 0; i < z->n_wanted; i++)
        if (z->wanted[i] == pid) {
            z->wanted[i] = z->wanted[--z->n_wanted];
            return zygote_send(z->ctrl, WIRE_ENDED, pid, status, -1, -1) < 0 ? -1 : 0;
        }
    z->done_pid[z->n_done % ZYGOTE_DONE] = pid;
    z->done_status[z->n_done % ZYGOTE_DONE] = status;
    z->n_done++;
    return 0;
}

/* Reap exited sandboxes, tell the worker about those it asked for, replace them. */
static int zygote_reap(struct zygote *z) {
    struct signalfd_siginfo si;
    while (read(z->sfd, &si, sizeof si) > 0) {}
    int status, replace = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
#ifdef ZYGOTE_SNAPSHOTS
        if (WIFSTOPPED(status)) {  /* a reusable sandbox (traced): a signal, passed on */
            ptrace(PTRACE_CONT, pid, 0, (status >> 16) ? 0 : WSTOPSIG(status));
            continue;
        }
#endif
#ifdef ZYGOTE_SNAPSHOTS
        if (zygote_snapshot(z, pid, 0) == NULL)  /* (a reusable one was replaced already) */
#endif
            replace++;  /* a used sandbox exited: keep the pool's size */
        if (zygote_ended(z, pid, status) < 0)
            return -1;
    }
    if (replace > z->cap - zygote_single_use(z))
        replace = z->cap - zygote_single_use(z);
    return zygote_fork(z, replace);
}

#ifdef ZYGOTE_SNAPSHOTS
/* 'S' and 'Z': snapshot sandbox pid, or reset it to its snapshot; the answer says whether
 * that was done (if not, the sandbox is killed: it is replaced once reaped). */
static int zygote_snap(struct zygote *z, char op, pid_t pid) {
    int known = 0, ok = 0, ended = 0, status = 0, keep = 0;
    for (int i = 0; i < z->n_live; i++)
        known |= z->live[i] == pid;
    if (known && op == WIRE_SNAP) {
        struct snapshot **slot = zygote_snapshot(z, pid, 1);
        keep = 1;  /* no room for another snapshot: left as it was */
        if (slot != NULL && *slot == NULL) {
            *slot = snapshot_take(pid, z->cpu_ns, &ended, &status);
            ok = *slot != NULL;
            keep = !ok && ended == 0;  /* not tracked, left as it was */
            ended = !ok && ended == 1;
        }
    } else if (known) {
        struct snapshot **slot = zygote_snapshot(z, pid, 0);
        if (slot != NULL) {
            int r = snapshot_reset(*slot, &status);
            ok = r == 0;
            ended = r == -2;  /* (if not ok, the snapshot is freed once the sandbox is
                                 reaped: its exit is then known as a reusable one's) */
        }
    }
    if (ended) {
        if (zygote_ended(z, pid, status) < 0)
            return -1;
        /* a sandbox to be snapshotted was a single-use one: replaced as one; a reusable
         * one was replaced when it was made reusable */
        int forked = op == WIRE_SNAP && zygote_single_use(z) < z->cap ? zygote_fork(z, 1) : 1;
        if (forked <= 0)
            return forked;  /* 0: in the sandbox just forked */
    } else if (known && !ok && !keep) {
        kill(pid, SIGKILL);
    }
    /* b: 1 done, 0 not (killed), 2 not snapshotted but left as it was */
    return zygote_send(z->ctrl, op == WIRE_SNAP ? WIRE_SNAPPED : WIRE_RESET_DONE, pid,
                       ok ? 1 : keep ? 2 : 0, -1, -1) < 0 ? -1 : 1;
}
#endif

/* One control message from the worker. */
static int zygote_command(struct zygote *z, const struct wire_control *m) {
    if (m->op == WIRE_FORK)
        return zygote_fork(z, m->a);
#ifdef ZYGOTE_SNAPSHOTS
    if (m->op == WIRE_SNAP || m->op == WIRE_RESET)
        return zygote_snap(z, m->op, m->a);
#endif
    if (m->op == WIRE_WARM) {
        z->warm = m->a != 0;
    } else if (m->op == WIRE_KILL) {
        for (int i = 0; i < z->n_live; i++)
            if (z->live[i] == m->a) {
                kill(m->a, SIGKILL);
                break;
            }
    } else if (m->op == WIRE_WAIT) {
        for (unsigned i = 0; i < ZYGOTE_DONE && i < z->n_done; i++)
            if (z->done_pid[i] == m->a) {
                z->done_pid[i] = 0;
                return zygote_send(z->ctrl, WIRE_ENDED, m->a, z->done_status[i], -1, -1) < 0
                       ? -1 : 1;
            }
        if (z->n_wanted < ZYGOTE_WANTED)
            z->wanted[z->n_wanted++] = m->a;
    }
    return 1;
}

/*
 * Serve the worker on z->ctrl (z->cap set, the rest zeroed) until it goes away.  Returns 0
 * in a forked sandbox (see zygote_fork()), -1 in the zygote once the worker is gone, after
 * killing the sandboxes still alive.
 */
static int zygote_run(struct zygote *z) {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &z->mask);
    z->sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (z->sfd < 0)
        return -1;
    struct pollfd pf[2] = {{.fd = z->ctrl, .events = POLLIN}, {.fd = z->sfd, .events = POLLIN}};
    int r = 1;
    while (r > 0) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[0].revents) {  /* first: what the worker said before it ended a sandbox */
            struct wire_control m;  /* applies to the sandbox that replaces it */
            if (recv(z->ctrl, &m, sizeof m, 0) != (ssize_t)sizeof m)
                break;  /* the worker is gone */
            if ((r = zygote_command(z, &m)) <= 0)
                break;
        }
        if (pf[1].revents)
            r = zygote_reap(z);
    }
    if (r == 0)
        return 0;
    for (int i = 0; i < z->n_live; i++)
        kill(z->live[i], SIGKILL);
    return -1;
}

#endif
