#define _GNU_SOURCE
#include "CFUSEKernel.h"
#include <errno.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* FUSE over io_uring (Linux >= 6.14, fuse ABI 7.42; the structures are in CFUSEKernel.h).
   Each ring thread owns one io_uring and one ring entry: it registers the entry, then, per
   request, rebuilds the request as read(2) from /dev/fuse would have returned it, lets
   libfuse process it (the reply comes back through snapfs_uring_capture), and commits the
   reply while fetching the next request in one io_uring_enter. */

enum { SQE_SIZE = 128 };   /* IORING_SETUP_SQE128: room for a fuse_uring_cmd_req */
enum { IN_HEADER = sizeof(struct fuse_in_header), OUT_HEADER = sizeof(struct fuse_out_header) };
_Static_assert(sizeof(struct fuse_in_header) <= FUSE_URING_IN_OUT_HEADER_SZ, "fuse_in_header fits the ring header");
_Static_assert(sizeof(struct fuse_uring_cmd_req) <= SQE_SIZE - offsetof(struct io_uring_sqe, cmd), "the command fits the SQE");

struct ring_thread {
    struct snapfs_uring *owner;
    int qid;
    int ring_fd;
    void *sq_map, *sqe_map;
    size_t sq_map_size, sqe_map_size;
    _Atomic unsigned *sq_head, *sq_tail, *cq_head, *cq_tail;
    unsigned *sq_array, sq_mask, cq_mask;
    struct io_uring_cqe *cqes;
    uint8_t *sqes;                  /* SQE_SIZE-byte entries */
    struct fuse_uring_req_header *header;
    uint8_t *region;                /* one page for the rebuilt request's headers, then the payload */
    size_t region_size;
    uint8_t *payload;
    size_t payload_size;
    struct iovec iov[2];
    uint64_t unique;                /* of the request being processed */
    int replied;
    pthread_t thread;
    int started;
};

struct snapfs_uring {
    int devfd;
    int count;
    int per_queue;
    size_t payload_size;
    snapfs_uring_process process;
    void *context;
    struct ring_thread *threads;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int go;                         /* 1: INIT answered, register; -1: give up */
    int registered, failed, first_error;
    _Atomic long served;
};

static __thread struct ring_thread *current_thread;

static int ring_setup(struct ring_thread *t) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SQE128;
    t->ring_fd = (int)syscall(__NR_io_uring_setup, 2, &p);
    if (t->ring_fd < 0) return -errno;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) return -EOPNOTSUPP;
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    t->sq_map_size = sq_size > cq_size ? sq_size : cq_size;
    t->sq_map = mmap(NULL, t->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, t->ring_fd, IORING_OFF_SQ_RING);
    if (t->sq_map == MAP_FAILED) { t->sq_map = NULL; return -errno; }
    t->sqe_map_size = p.sq_entries * SQE_SIZE;
    t->sqe_map = mmap(NULL, t->sqe_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, t->ring_fd, IORING_OFF_SQES);
    if (t->sqe_map == MAP_FAILED) { t->sqe_map = NULL; return -errno; }
    uint8_t *base = t->sq_map;
    t->sq_head = (_Atomic unsigned *)(base + p.sq_off.head);
    t->sq_tail = (_Atomic unsigned *)(base + p.sq_off.tail);
    t->sq_mask = *(unsigned *)(base + p.sq_off.ring_mask);
    t->sq_array = (unsigned *)(base + p.sq_off.array);
    t->cq_head = (_Atomic unsigned *)(base + p.cq_off.head);
    t->cq_tail = (_Atomic unsigned *)(base + p.cq_off.tail);
    t->cq_mask = *(unsigned *)(base + p.cq_off.ring_mask);
    t->cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);
    t->sqes = t->sqe_map;
    return 0;
}

static void ring_teardown(struct ring_thread *t) {
    if (t->sqe_map) munmap(t->sqe_map, t->sqe_map_size);
    if (t->sq_map) munmap(t->sq_map, t->sq_map_size);
    if (t->ring_fd >= 0) close(t->ring_fd);
    if (t->header) munmap(t->header, 4096);
    if (t->region) munmap(t->region, t->region_size);
    t->sqe_map = t->sq_map = NULL;
    t->header = NULL;
    t->region = NULL;
    t->ring_fd = -1;
}

/* Queues one FUSE command (REGISTER or COMMIT_AND_FETCH). */
static void ring_queue(struct ring_thread *t, enum fuse_uring_cmd command, uint64_t commit_id) {
    unsigned tail = atomic_load_explicit(t->sq_tail, memory_order_relaxed);
    unsigned index = tail & t->sq_mask;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)(t->sqes + (size_t)index * SQE_SIZE);
    memset(sqe, 0, SQE_SIZE);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = t->owner->devfd;
    sqe->cmd_op = command;
    sqe->user_data = (uint64_t)command;
    if (command == FUSE_IO_URING_CMD_REGISTER) {
        sqe->addr = (uint64_t)(uintptr_t)t->iov;
        sqe->len = 2;
    }
    struct fuse_uring_cmd_req *req = (struct fuse_uring_cmd_req *)sqe->cmd;
    req->commit_id = commit_id;
    req->qid = (uint16_t)t->qid;
    t->sq_array[index] = index;
    atomic_store_explicit(t->sq_tail, tail + 1, memory_order_release);
}

/* Takes the completion that is there, if any: 1 and its result in *res, or 0. */
static int ring_reap(struct ring_thread *t, int *res) {
    unsigned head = atomic_load_explicit(t->cq_head, memory_order_relaxed);
    if (head == atomic_load_explicit(t->cq_tail, memory_order_acquire)) return 0;
    *res = t->cqes[head & t->cq_mask].res;
    atomic_store_explicit(t->cq_head, head + 1, memory_order_release);
    return 1;
}

/* One io_uring_enter: submits what is queued and, with `wait`, waits for a completion.
   0, or -errno for a failure other than an interruption. */
static int ring_enter(struct ring_thread *t, int wait) {
    unsigned pending = atomic_load_explicit(t->sq_tail, memory_order_relaxed)
                     - atomic_load_explicit(t->sq_head, memory_order_acquire);
    if (pending == 0 && !wait) return 0;
    long r = syscall(__NR_io_uring_enter, t->ring_fd, pending, wait ? 1 : 0, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
    return r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY ? -errno : 0;
}

/* Submits what is queued without waiting. */
static int ring_submit(struct ring_thread *t) {
    for (;;) {
        int error = ring_enter(t, 0);
        if (error != 0) return error;
        if (atomic_load_explicit(t->sq_tail, memory_order_relaxed) == atomic_load_explicit(t->sq_head, memory_order_acquire)) return 0;
    }
}

/* Submits what is queued and waits for the next completion; returns its result. */
static int ring_wait(struct ring_thread *t) {
    for (;;) {
        int res;
        if (ring_reap(t, &res)) return res;
        int error = ring_enter(t, 1);
        if (error != 0) return error;
    }
}

/* The entry's reply: `error`, no payload. */
static void ring_reply_error(struct ring_thread *t, uint64_t unique, int error) {
    struct fuse_out_header *out = (struct fuse_out_header *)t->header->in_out;
    out->unique = unique;
    out->error = error;
    out->len = OUT_HEADER;
    t->header->ring_ent_in_out.payload_sz = 0;
}

ssize_t snapfs_uring_capture(const struct iovec *iov, int count) {
    struct ring_thread *t = current_thread;
    if (t == NULL || t->replied || count < 1 || iov[0].iov_len < OUT_HEADER) return -1;
    const struct fuse_out_header *out = iov[0].iov_base;
    if (out->unique != t->unique) return -1;   /* a notification, or another request's reply */
    size_t length = iov[0].iov_len - OUT_HEADER;
    for (int i = 1; i < count; i++) length += iov[i].iov_len;
    struct fuse_out_header *ring_out = (struct fuse_out_header *)t->header->in_out;
    if (length > t->payload_size) {
        ring_reply_error(t, out->unique, -EIO);
    } else {
        ring_out->unique = out->unique;
        ring_out->error = out->error;
        ring_out->len = (uint32_t)(OUT_HEADER + length);
        size_t at = 0;
        if (iov[0].iov_len > OUT_HEADER) {
            memmove(t->payload, (const uint8_t *)iov[0].iov_base + OUT_HEADER, iov[0].iov_len - OUT_HEADER);
            at = iov[0].iov_len - OUT_HEADER;
        }
        for (int i = 1; i < count; i++) {
            memmove(t->payload + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        t->header->ring_ent_in_out.payload_sz = (uint32_t)length;
    }
    t->replied = 1;
    ssize_t total = 0;
    for (int i = 0; i < count; i++) total += (ssize_t)iov[i].iov_len;
    return total;
}

ssize_t snapfs_uring_capture_pipe(int pipe_fd, size_t length) {
    struct ring_thread *t = current_thread;
    if (t == NULL || t->replied || length < OUT_HEADER || length - OUT_HEADER > t->payload_size) return -1;
    struct fuse_out_header out;
    struct iovec parts[2] = { { &out, OUT_HEADER }, { t->payload, length - OUT_HEADER } };
    size_t done = 0;
    while (done < length) {
        /* Advance the vector past what has been read. */
        struct iovec rest[2];
        int n = 0;
        size_t skip = done;
        for (int i = 0; i < 2; i++) {
            if (skip >= parts[i].iov_len) { skip -= parts[i].iov_len; continue; }
            rest[n].iov_base = (uint8_t *)parts[i].iov_base + skip;
            rest[n].iov_len = parts[i].iov_len - skip;
            skip = 0;
            n++;
        }
        ssize_t r = readv(pipe_fd, rest, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    if (out.unique != t->unique) return -1;
    struct fuse_out_header *ring_out = (struct fuse_out_header *)t->header->in_out;
    *ring_out = out;
    t->header->ring_ent_in_out.payload_sz = (uint32_t)(length - OUT_HEADER);
    t->replied = 1;
    return (ssize_t)length;
}

int snapfs_uring_serving(void) { return current_thread != NULL; }

/* One request: rebuilt in front of its payload, processed, its reply committed. */
static uint64_t ring_serve_one(struct ring_thread *t) {
    const struct fuse_in_header *in = (const struct fuse_in_header *)t->header->in_out;
    uint64_t commit_id = t->header->ring_ent_in_out.commit_id;
    uint32_t payload = t->header->ring_ent_in_out.payload_sz;
    uint64_t unique = in->unique;
    uint32_t opcode = in->opcode;
    if (in->len < IN_HEADER + (uint64_t)payload || in->len - IN_HEADER - payload > FUSE_URING_OP_IN_OUT_SZ || payload > t->payload_size) {
        ring_reply_error(t, unique, -EIO);
        return commit_id;
    }
    size_t op_size = in->len - IN_HEADER - payload;
    uint8_t *request = t->payload - IN_HEADER - op_size;
    memcpy(request, in, IN_HEADER);
    memcpy(request + IN_HEADER, t->header->op_in, op_size);
    t->unique = unique;
    t->replied = 0;
    current_thread = t;
    t->owner->process(t->owner->context, request, (size_t)((const struct fuse_in_header *)request)->len);
    current_thread = NULL;
    if (!t->replied) {
        /* No reply (NOTIFY_REPLY takes none): the entry still has to go back. */
        ring_reply_error(t, unique, opcode == FUSE_NOTIFY_REPLY ? 0 : -EIO);
    }
    atomic_fetch_add_explicit(&t->owner->served, 1, memory_order_relaxed);
    return commit_id;
}

static uint64_t monotonic_us(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

static void set_policy(int policy) {
    struct sched_param param = { 0 };
    (void)sched_setscheduler(0, policy, &param);
}

static void *ring_main(void *argument) {
    struct ring_thread *t = argument;
    struct snapfs_uring *u = t->owner;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(t->qid, &cpus);
    (void)sched_setaffinity(0, sizeof cpus, &cpus);   /* a cpuset may refuse; the queue still works */

    pthread_mutex_lock(&u->lock);
    while (u->go == 0) pthread_cond_wait(&u->changed, &u->lock);
    int go = u->go;
    pthread_mutex_unlock(&u->lock);
    int result = go > 0 ? 0 : -ECANCELED;
    int pending_request = 0;
    if (result == 0) {
        t->payload_size = u->payload_size;
        t->region_size = 4096 + ((t->payload_size + 4095) & ~(size_t)4095);
        t->header = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        t->region = mmap(NULL, t->region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t->header == MAP_FAILED || t->region == MAP_FAILED) {
            if (t->header == MAP_FAILED) t->header = NULL;
            if (t->region == MAP_FAILED) t->region = NULL;
            result = -ENOMEM;
        }
    }
    if (result == 0) {
        t->payload = t->region + 4096;
        t->iov[0].iov_base = t->header;
        t->iov[0].iov_len = sizeof(struct fuse_uring_req_header);
        t->iov[1].iov_base = t->payload;
        t->iov[1].iov_len = t->payload_size;
        /* REGISTER is issued at submission: a failure completes at once, a success only
           when the first request arrives. */
        for (int attempt = 0;; attempt++) {
            ring_queue(t, FUSE_IO_URING_CMD_REGISTER, 0);
            result = ring_submit(t);
            if (result == 0 && ring_reap(t, &result)) pending_request = result == 0;
            if (result != -EAGAIN || attempt > 2000) break;
            struct timespec pause = { 0, 1000000 };
            nanosleep(&pause, NULL);
        }
    }
    pthread_mutex_lock(&u->lock);
    if (result == 0) u->registered++;
    else { u->failed++; if (!u->first_error) u->first_error = result; }
    pthread_cond_broadcast(&u->changed);
    pthread_mutex_unlock(&u->lock);
    /* REGISTER completes only when the first request arrives (res 0); other results end the thread. */
    if (result == 0 && !pending_request) result = ring_wait(t);
    uint64_t idle_from = 0;   /* no SCHED_IDLE commits before this (monotonic µs) */
    while (result == 0) {
        uint64_t commit_id = ring_serve_one(t);
        ring_queue(t, FUSE_IO_URING_CMD_COMMIT_AND_FETCH, commit_id);
        /* The commit wakes the requester. The scheduler puts a woken task on an idle CPU
           rather than on a busy one, and this thread keeps its CPU busy at that moment: the
           requester would wake on the other CPU, and the next request would cross CPUs
           twice (on a VM, each crossing is an interrupt to a halted vCPU, some 10 us). For
           the commit alone this thread is SCHED_IDLE, which the scheduler counts as idle:
           the requester wakes here and runs at once; the thread waits for the next request
           at normal priority. When getting the CPU back took long (a busy machine, where an
           idle-priority thread would wait), it does without for a second. */
        uint64_t start = monotonic_us();
        int idle = start >= idle_from;
        if (idle) set_policy(SCHED_IDLE);
        result = ring_submit(t);
        if (idle) {
            set_policy(SCHED_OTHER);
            uint64_t back = monotonic_us();
            if (back - start > 1000) idle_from = back + 1000000;
        }
        if (result == 0) result = ring_wait(t);
        while (result == -EINTR || result == -EAGAIN) {
            ring_queue(t, FUSE_IO_URING_CMD_COMMIT_AND_FETCH, commit_id);
            result = ring_wait(t);
        }
    }
    return NULL;
}

/* The kernel makes one queue per possible CPU (num_possible_cpus), and the ring is
   ready only once every queue has an entry: the count comes from the same list. */
static int possible_cpus(void) {
    FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
    if (f == NULL) return get_nprocs_conf();
    int highest = -1, low, high;
    char separator;
    while (fscanf(f, "%d", &low) == 1) {
        high = low;
        if (fscanf(f, "%c", &separator) == 1 && separator == '-') {
            if (fscanf(f, "%d", &high) != 1) break;
            if (fscanf(f, "%c", &separator) != 1) separator = 0;
        }
        if (high > highest) highest = high;
        if (separator != ',') break;
    }
    fclose(f);
    return highest >= 0 ? highest + 1 : get_nprocs_conf();
}

struct snapfs_uring *snapfs_uring_create(int devfd, int per_queue, snapfs_uring_process process, void *context) {
    int queues = possible_cpus();
    if (queues < 1 || per_queue < 1) { errno = EINVAL; return NULL; }
    struct snapfs_uring *u = calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->devfd = devfd;
    u->per_queue = per_queue;
    u->count = queues * per_queue;
    u->process = process;
    u->context = context;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->changed, NULL);
    u->threads = calloc((size_t)u->count, sizeof *u->threads);
    if (u->threads == NULL) { free(u); errno = ENOMEM; return NULL; }
    int error = 0;
    for (int i = 0; i < u->count; i++) {
        struct ring_thread *t = &u->threads[i];
        t->owner = u;
        t->qid = i / per_queue;
        t->ring_fd = -1;
        if (error == 0) error = ring_setup(t);
    }
    for (int i = 0; error == 0 && i < u->count; i++) {
        struct ring_thread *t = &u->threads[i];
        error = -pthread_create(&t->thread, NULL, ring_main, t);
        if (error == 0) t->started = 1;
    }
    if (error != 0) {
        pthread_mutex_lock(&u->lock);
        u->go = -1;
        pthread_cond_broadcast(&u->changed);
        pthread_mutex_unlock(&u->lock);
        for (int i = 0; i < u->count; i++) {
            if (u->threads[i].started) pthread_join(u->threads[i].thread, NULL);
            ring_teardown(&u->threads[i]);
        }
        free(u->threads);
        free(u);
        errno = -error;
        return NULL;
    }
    return u;
}

int snapfs_uring_start(struct snapfs_uring *u, size_t payload_size) {
    pthread_mutex_lock(&u->lock);
    u->payload_size = payload_size;
    u->go = 1;
    pthread_cond_broadcast(&u->changed);
    /* Every thread registers, or one fails (the kernel then falls back to /dev/fuse). */
    while (u->registered + u->failed < u->count) pthread_cond_wait(&u->changed, &u->lock);
    int result = u->failed ? u->first_error : 0;
    pthread_mutex_unlock(&u->lock);
    return result;
}

void snapfs_uring_cancel(struct snapfs_uring *u) {
    pthread_mutex_lock(&u->lock);
    if (u->go == 0) u->go = -1;
    pthread_cond_broadcast(&u->changed);
    pthread_mutex_unlock(&u->lock);
}

int snapfs_uring_queues(const struct snapfs_uring *u) { return u->count / u->per_queue; }

long snapfs_uring_served(struct snapfs_uring *u) { return atomic_load_explicit(&u->served, memory_order_relaxed); }
