/*
 * The sandbox wire protocol, for C: the control messages between the worker and a zygote,
 * the channel between the worker and a sandbox (assignments, segment tables, reports) and
 * the element codes of the context layout.  ../protocol.py defines the same for Python,
 * where each is described; tests/backends/engines/process/test_protocol.py keeps the two in
 * step: every WIRE_<NAME> here is protocol.<NAME> there, and WIRE_<NAME>_SIZE the size of
 * the struct.Struct protocol.<NAME>.  All integers are little-endian.
 */
#ifndef DANDELION_PROTOCOL_H
#define DANDELION_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

/* ---- control socket, worker <-> zygote (SOCK_SEQPACKET): op, a, b ---- */
#define WIRE_CONTROL_SIZE 9
#define WIRE_FORK 'F'          /* worker: fork a sandboxes */
#define WIRE_KILL 'K'          /* worker: kill sandbox a */
#define WIRE_WAIT 'W'          /* worker: report how sandbox a ended */
#define WIRE_WARM 'H'          /* worker: whether sandboxes forked from now on warm up (a) */
#define WIRE_STARTED 'R'       /* zygote: started, pid a (a Python zygote: with its modules) */
#define WIRE_FORKED 'C'        /* zygote: sandbox a (b: 1 untracked), its channel, maybe a pidfd */
#define WIRE_ENDED 'X'         /* zygote: sandbox a ended with wait status b */
#define WIRE_SNAP 'S'          /* worker: snapshot sandbox a, which waits for work */
#define WIRE_SNAPPED 's'       /* zygote: sandbox a snapshotted (b = 1) or killed (b = 0) */
#define WIRE_RESET 'Z'         /* worker: reset sandbox a to its snapshot */
#define WIRE_RESET_DONE 'z'    /* zygote: sandbox a reset (b = 1) or killed (b = 0) */
#define WIRE_MAX_USES 256      /* resets of one sandbox at most */

/* ---- channel, worker <-> sandbox (a socket pair) ---- */
#define WIRE_CHANNEL_FD 3      /* the sandbox's end of its channel */
#define WIRE_UFFD_FD 4         /* a reusable sandbox's userfaultfd (snapshot.h) */
#define WIRE_READY 'R'         /* sandbox: waiting for its assignment */
#define WIRE_ASSIGN_SIZE 44    /* worker: an assignment, with the context's memfd */
#define WIRE_ASSIGN_MAGIC "DDGO"
#define WIRE_ASSIGN_CAPACITY_AT 8
#define WIRE_ASSIGN_LENGTH_AT 24
#define WIRE_KIND_PYTHON 1
#define WIRE_KIND_NATIVE 2
#define WIRE_SEGMENT_SIZE 36   /* a native function's segment table entry */
#define WIRE_MAX_SEGMENTS 64

/* ---- reports, sandbox -> worker ---- */
#define WIRE_OKAY_SIZE 12      /* a Python function's outputs are in the context */
#define WIRE_OKAY_TAG "OKAY"
#define WIRE_DONE_SIZE 8       /* a Python function failed: a body of length bytes follows */
#define WIRE_DONE_TAG "DONE"
#define WIRE_GONE_SIZE 24      /* a fatal signal */
#define WIRE_GONE_TAG "GONE"
#define WIRE_NATV_SIZE 8       /* a native function returned */
#define WIRE_NATV_TAG "NATV"
#define WIRE_MAX_REPORT 1048576

/* ---- the context layout (dandelion.h declares its structs) ---- */
#define WIRE_CONTEXT_MAGIC "DDCTX01\0"
#define WIRE_EL_ANY 0          /* an item: "as declared"; a declaration: untyped */
#define WIRE_EL_BYTES 1
#define WIRE_EL_STR 2
#define WIRE_EL_INT 3
#define WIRE_EL_FLOAT 4
#define WIRE_EL_BOOL 5
#define WIRE_EL_JSON 6
#define WIRE_EL_NDARRAY 7
#define WIRE_EL_COUNT 8

#pragma pack(push, 1)
struct wire_control { char op; int32_t a, b; };
struct wire_assign {
    char magic[4];
    uint32_t kind;
    uint64_t capacity, memory_limit, payload_len, entry;
    uint32_t n_segments;
};
/* vaddr, memsz, prot (PROT_*), offset (in the bytes that follow the table), filesz */
struct wire_segment { uint64_t vaddr, memsz; int32_t prot; uint64_t offset, filesz; };
struct wire_okay { char tag[4]; int64_t elapsed_ns; };
struct wire_done { char tag[4]; uint32_t length; };
#pragma pack(pop)
struct wire_gone { char tag[4]; int32_t signo, syscall_nr, code; uint64_t addr; };
struct wire_natv { char tag[4]; int32_t rc; };

_Static_assert(sizeof(struct wire_control) == WIRE_CONTROL_SIZE, "control message");
_Static_assert(sizeof(struct wire_assign) == WIRE_ASSIGN_SIZE, "assignment");
_Static_assert(offsetof(struct wire_assign, capacity) == WIRE_ASSIGN_CAPACITY_AT, "capacity");
_Static_assert(offsetof(struct wire_assign, payload_len) == WIRE_ASSIGN_LENGTH_AT, "length");
_Static_assert(sizeof(struct wire_segment) == WIRE_SEGMENT_SIZE, "segment");
_Static_assert(sizeof(struct wire_okay) == WIRE_OKAY_SIZE, "OKAY");
_Static_assert(sizeof(struct wire_done) == WIRE_DONE_SIZE, "DONE");
_Static_assert(sizeof(struct wire_gone) == WIRE_GONE_SIZE, "GONE");
_Static_assert(sizeof(struct wire_natv) == WIRE_NATV_SIZE, "NATV");

#endif
