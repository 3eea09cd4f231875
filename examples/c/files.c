/* files: a small file tool used to exercise volume mounts (-v HOST:GUEST[:ro]).
 *   files ls DIR | cat FILE | write FILE TEXT | append FILE TEXT
 *   files mkdir DIR | rm PATH | pwd
 * Failures print "files: OP PATH: reason" to stderr and exit 1; usage errors exit 2. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *op, const char *path) {
    int err = errno;
    fflush(stdout);
    if (path)
        fprintf(stderr, "files: %s %s: %s\n", op, path, strerror(err));
    else
        fprintf(stderr, "files: %s: %s\n", op, strerror(err));
    return 1;
}

static int usage(void) {
    fprintf(stderr,
            "usage: files ls DIR | cat FILE | write FILE TEXT | append FILE TEXT |\n"
            "             mkdir DIR | rm PATH | pwd\n");
    return 2;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int do_ls(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return fail("ls", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *ent;
    errno = 0;
    while ((ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown)
                return fail("ls", dir);
            names = grown;
        }
        if (!(names[n++] = strdup(ent->d_name)))
            return fail("ls", dir);
        errno = 0;
    }
    if (errno != 0)
        return fail("ls", dir);
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", names[i]);
    return 0;
}

static int do_cat(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return fail("cat", path);
    char buf[8192];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0) {
        if (fwrite(buf, 1, (size_t)got, stdout) != (size_t)got)
            return fail("cat", "<stdout>");
    }
    if (got < 0)
        return fail("cat", path);
    close(fd);
    return 0;
}

static int do_write(const char *op, const char *path, const char *text, int flags) {
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
    if (fd < 0)
        return fail(op, path);
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0)
            return fail(op, path);
        done += (size_t)w;
    }
    if (close(fd) != 0)
        return fail(op, path);
    return 0;
}

static int do_rm(const char *path) {
    if (unlink(path) == 0)
        return 0;
    int unlink_err = errno;
    if (unlink_err == EISDIR || unlink_err == EPERM) {
        if (rmdir(path) == 0)
            return 0;
        if (errno == ENOTDIR)
            errno = unlink_err;
    }
    return fail("rm", path);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return usage();
    const char *op = argv[1];

    if (strcmp(op, "pwd") == 0 && argc == 2) {
        char buf[4096];
        if (!getcwd(buf, sizeof buf))
            return fail("pwd", NULL);
        printf("%s\n", buf);
        return 0;
    }
    if (strcmp(op, "ls") == 0 && argc == 3)
        return do_ls(argv[2]);
    if (strcmp(op, "cat") == 0 && argc == 3)
        return do_cat(argv[2]);
    if (strcmp(op, "write") == 0 && argc == 4)
        return do_write("write", argv[2], argv[3], O_TRUNC);
    if (strcmp(op, "append") == 0 && argc == 4)
        return do_write("append", argv[2], argv[3], O_APPEND);
    if (strcmp(op, "mkdir") == 0 && argc == 3)
        return mkdir(argv[2], 0755) == 0 ? 0 : fail("mkdir", argv[2]);
    if (strcmp(op, "rm") == 0 && argc == 3)
        return do_rm(argv[2]);
    return usage();
}
