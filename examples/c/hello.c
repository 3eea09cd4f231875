/* hello: prints a greeting, its arguments and its environment; with the
 * argument --stdin it also echoes standard input, one "stdin: " line per line.
 * Shows argument passing, environment variables (-e KEY=VALUE) and stdin. */
#include <stdio.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv) {
    int echo_stdin = 0;

    printf("Hello from berth!\n");
    for (int i = 1; i < argc; i++) {
        printf("arg[%d]=%s\n", i, argv[i]);
        if (strcmp(argv[i], "--stdin") == 0)
            echo_stdin = 1;
    }
    for (char **e = environ; e && *e; e++)
        printf("env %s\n", *e);

    if (echo_stdin) {
        int c, at_line_start = 1;
        while ((c = getchar()) != EOF) {
            if (at_line_start)
                fputs("stdin: ", stdout);
            putchar(c);
            at_line_start = (c == '\n');
        }
    }
    fflush(stdout);
    return 0;
}
