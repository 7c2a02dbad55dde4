/*
 * smallfiles: the small-file phases of the snapfs benchmark.
 *
 *   smallfiles DIR NFILES NDIRS STAT_PASSES [CONTROL]
 *
 * In DIR (which must exist and be empty), creates NDIRS subdirectories d000..,
 * spreads NFILES files round-robin over them, and times three phases:
 *
 *   create  mkdir the subdirectories, then for each file open(O_CREAT|O_EXCL|O_WRONLY),
 *           write 4096 bytes, close. No fsync: this is the metadata + page-cache path.
 *   stat    stat() every file by its relative path, STAT_PASSES times over (warm: the
 *           files were just created, nothing is dropped in between).
 *   delete  unlink every file, then rmdir the subdirectories.
 *
 * sync() runs (untimed) between the phases so that writeback of one phase does not
 * land in the next one's timing. Prints one JSON object on stdout:
 *   {"files": N, "create_s": ..., "stat_s": ..., "stat_passes": P, "delete_s": ...}
 *
 * With CONTROL (a snapfs mount's .snapfs-control; "-" for none), the object also has
 * "requests": the `requests:` status line's values read twice before the create phase
 * and once after each phase and its sync (see bench/lib/request_counts.py).
 * Exits non-zero with a message on stderr at the first failing call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
    fprintf(stderr, "smallfiles: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void name_of(char *buf, size_t len, long i, long ndirs) {
    snprintf(buf, len, "d%03ld/f%06ld", i % ndirs, i);
}

/* Appends the values of CONTROL's `requests:` line to out (as a JSON string). */
static void read_requests(const char *control, char *out, size_t len) {
    static char text[65536];
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open", control);
    ssize_t n = read(fd, text, sizeof text - 1);
    if (n < 0) die("read", control);
    close(fd);
    text[n] = 0;
    const char *line = strstr(text, "\nrequests: ");
    const char *end = line ? strchr(line + 1, '\n') : NULL;
    size_t used = strlen(out);
    if (line && end)
        snprintf(out + used, len - used, "%s\"%.*s\"", used > 1 ? ", " : "", (int)(end - line - 11), line + 11);
    else
        snprintf(out + used, len - used, "%s\"\"", used > 1 ? ", " : "");
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: smallfiles DIR NFILES NDIRS STAT_PASSES [CONTROL]\n");
        return 2;
    }
    const char *control = argc == 6 && strcmp(argv[5], "-") != 0 ? argv[5] : NULL;
    static char requests[16384] = "[";
    const char *dir = argv[1];
    long nfiles = atol(argv[2]), ndirs = atol(argv[3]), passes = atol(argv[4]);
    if (nfiles <= 0 || ndirs <= 0 || ndirs > 1000 || passes <= 0) {
        fprintf(stderr, "smallfiles: bad arguments\n");
        return 2;
    }
    if (chdir(dir) != 0) die("chdir", dir);

    char data[4096];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)('a' + i % 26);
    char path[64];

    sync();
    if (control) {
        read_requests(control, requests, sizeof requests);
        read_requests(control, requests, sizeof requests);
    }
    double t0 = now();
    for (long d = 0; d < ndirs; d++) {
        snprintf(path, sizeof path, "d%03ld", d);
        if (mkdir(path, 0755) != 0) die("mkdir", path);
    }
    for (long i = 0; i < nfiles; i++) {
        name_of(path, sizeof path, i, ndirs);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) die("open", path);
        if (write(fd, data, sizeof data) != (ssize_t)sizeof data) die("write", path);
        if (close(fd) != 0) die("close", path);
    }
    double create_s = now() - t0;

    sync();
    if (control) read_requests(control, requests, sizeof requests);
    struct stat st;
    t0 = now();
    for (long p = 0; p < passes; p++) {
        for (long i = 0; i < nfiles; i++) {
            name_of(path, sizeof path, i, ndirs);
            if (stat(path, &st) != 0) die("stat", path);
            if (st.st_size != (off_t)sizeof data) {
                errno = EIO;
                die("unexpected size of", path);
            }
        }
    }
    double stat_s = now() - t0;

    sync();
    if (control) read_requests(control, requests, sizeof requests);
    t0 = now();
    for (long i = 0; i < nfiles; i++) {
        name_of(path, sizeof path, i, ndirs);
        if (unlink(path) != 0) die("unlink", path);
    }
    for (long d = 0; d < ndirs; d++) {
        snprintf(path, sizeof path, "d%03ld", d);
        if (rmdir(path) != 0) die("rmdir", path);
    }
    double delete_s = now() - t0;
    if (control) {
        sync();
        read_requests(control, requests, sizeof requests);
    }
    strcat(requests, "]");

    printf("{\"files\": %ld, \"dirs\": %ld, \"create_s\": %.9f, \"stat_s\": %.9f, "
           "\"stat_passes\": %ld, \"delete_s\": %.9f%s%s}\n",
           nfiles, ndirs, create_s, stat_s, passes, delete_s,
           control ? ", \"requests\": " : "", control ? requests : "");
    return 0;
}
