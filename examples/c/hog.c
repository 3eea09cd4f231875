/* hog: allocates MIB mebibytes (default 64) in 1 MiB chunks and touches every
 * byte. Shows the memory limit (-m): past the limit malloc fails and hog aborts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024 * 1024)

/* Chunks are chained through a volatile head so the allocations cannot be
 * optimised away. */
static void *volatile head;

int main(int argc, char **argv) {
    long want = argc > 1 ? atol(argv[1]) : 64;
    for (long i = 0; i < want; i++) {
        void **chunk = malloc(MIB);
        if (!chunk) {
            fprintf(stderr, "hog: malloc failed after %ld MiB\n", i);
            abort();
        }
        memset(chunk, 0xA5, MIB);
        *chunk = head;
        head = chunk;
    }
    printf("hog: allocated %ld MiB\n", want);
    return 0;
}
