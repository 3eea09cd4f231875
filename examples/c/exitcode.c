/* exitcode: `exitcode N` exits with status N (no argument: 0); prints nothing.
 * Shows that berth run propagates the guest's exit status. */
#include <stdlib.h>

int main(int argc, char **argv) {
    exit(argc > 1 ? atoi(argv[1]) : 0);
}
