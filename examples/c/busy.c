/* busy: burns CPU. `busy N` runs N million iterations and prints "busy: done N";
 * with no argument it spins forever without making any WASI call.
 * Shows --cpus, --timeout and interrupting a guest stuck in pure computation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A volatile LCG state: every iteration must load and store it. */
static volatile uint64_t state = 1;

static void step(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        for (;;)
            step();
    }
    unsigned long long n = strtoull(argv[1], NULL, 10);
    for (unsigned long long i = 0; i < n * 1000000ULL; i++)
        step();
    printf("busy: done %llu\n", n);
    return 0;
}
