/* escape: a hostile guest that tries to leave its sandbox and reports what it
 * managed. Every argument is a path to open for reading; `--write PATH` tries to
 * create and write PATH instead. Each path is tried through libc (relative paths
 * resolve against the guest's cwd, `..` included) and also raw, handed unchanged
 * to WASI path_open on every preopened directory, bypassing libc's own checks.
 * Prints "ESCAPED read|write PATH" or "denied read|write PATH" per path, then
 * "env count N". Exits 1 if anything succeeded, else 0. The caller decides which
 * paths lie outside the sandbox. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <wasi/api.h>

extern char **environ;

#define MAX_PREOPENS 64
static __wasi_fd_t preopens[MAX_PREOPENS];
static int npreopens;

static void find_preopens(void) {
    /* Preopened directories are numbered consecutively from fd 3. */
    for (__wasi_fd_t fd = 3; npreopens < MAX_PREOPENS; fd++) {
        __wasi_prestat_t st;
        if (__wasi_fd_prestat_get(fd, &st) != 0)
            break;
        if (st.tag == __WASI_PREOPENTYPE_DIR)
            preopens[npreopens++] = fd;
    }
}

static const char payload[] = "escaped\n";

static int libc_read(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static int libc_write(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return 0;
    ssize_t w = write(fd, payload, sizeof payload - 1);
    close(fd);
    return w > 0;
}

static int raw_open(__wasi_fd_t dir, const char *path, int for_write) {
    __wasi_fd_t fd;
    __wasi_oflags_t oflags = for_write ? (__WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC) : 0;
    __wasi_rights_t rights = for_write ? __WASI_RIGHTS_FD_WRITE : __WASI_RIGHTS_FD_READ;
    if (__wasi_path_open(dir, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, path, oflags,
                         rights, 0, 0, &fd) != 0)
        return 0;
    int ok = 1;
    if (for_write) {
        __wasi_ciovec_t iov = {(const uint8_t *)payload, sizeof payload - 1};
        __wasi_size_t n = 0;
        ok = __wasi_fd_write(fd, &iov, 1, &n) == 0 && n > 0;
    }
    (void)__wasi_fd_close(fd);
    return ok;
}

/* Returns 1 if PATH could be opened (and, for writes, written). */
static int attempt(const char *path, int for_write) {
    int escaped = for_write ? libc_write(path) : libc_read(path);
    for (int i = 0; i < npreopens; i++)
        escaped |= raw_open(preopens[i], path, for_write);
    printf("%s %s %s\n", escaped ? "ESCAPED" : "denied", for_write ? "write" : "read", path);
    return escaped;
}

int main(int argc, char **argv) {
    int escaped = 0;
    find_preopens();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--write") == 0 && i + 1 < argc)
            escaped |= attempt(argv[++i], 1);
        else
            escaped |= attempt(argv[i], 0);
    }
    int n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    printf("env count %d\n", n);
    return escaped ? 1 : 0;
}
