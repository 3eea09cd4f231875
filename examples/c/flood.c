/* flood: `flood [stdout|stderr] [MIB]` writes 64 KiB blocks of 'x' to the chosen
 * stream (default stdout); stops after MIB mebibytes, or never without MIB.
 * Exits 0 as soon as a write fails (e.g. the reader went away).
 * Shows output throughput and back-pressure on a guest's stdio. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (64 * 1024)

static char block[BLOCK];

int main(int argc, char **argv) {
    int fd = STDOUT_FILENO;
    long long blocks = -1; /* -1: forever */

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "stdout") == 0)
            fd = STDOUT_FILENO;
        else if (strcmp(argv[i], "stderr") == 0)
            fd = STDERR_FILENO;
        else {
            long long mib = atoll(argv[i]);
            blocks = mib > 0 ? mib * (1024 * 1024 / BLOCK) : 0;
        }
    }

    memset(block, 'x', sizeof block);
    for (long long b = 0; blocks < 0 || b < blocks; b++) {
        size_t done = 0;
        while (done < BLOCK) {
            ssize_t w = write(fd, block + done, BLOCK - done);
            if (w <= 0)
                return 0;
            done += (size_t)w;
        }
    }
    return 0;
}
