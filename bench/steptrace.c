/* Runs a program under ptrace, single-stepping its first thread, and writes
 * each instruction address it executes inside the program's own executable
 * mappings once, in the order first executed, as hex offsets from the load
 * base (= addresses in `nm` output for a PIE).
 *
 * bench/startup-order.sh uses it to find the code `berth run` executes, so
 * that the linker can place that code together. Single-stepping is slow
 * (about 30k instructions per second of wall time) but exact, where
 * sampling profilers miss functions that run once.
 *
 * Usage: steptrace OUT PROGRAM [ARGS...] */
#define _GNU_SOURCE
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: steptrace OUT PROGRAM [ARGS...]\n");
    return 2;
  }
  char exe[PATH_MAX];
  if (!realpath(argv[2], exe)) {
    perror(argv[2]);
    return 1;
  }
  FILE *out = fopen(argv[1], "w");
  if (!out) {
    perror(argv[1]);
    return 1;
  }
  pid_t pid = fork();
  if (pid == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    execv(argv[2], argv + 2);
    _exit(127);
  }
  int status;
  waitpid(pid, &status, 0); /* stopped after exec */

  /* The executable's mappings: its load base and its code range. */
  char maps[64], line[PATH_MAX + 128], name[PATH_MAX];
  snprintf(maps, sizeof maps, "/proc/%d/maps", pid);
  FILE *f = fopen(maps, "r");
  uint64_t base = UINT64_MAX, lo = UINT64_MAX, hi = 0;
  while (f && fgets(line, sizeof line, f)) {
    uint64_t from, to, offset;
    char perms[8];
    name[0] = 0;
    if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &from, &to, perms, &offset, name) >= 4 &&
        strcmp(name, exe) == 0) {
      if (offset == 0 && from < base) base = from;
      if (perms[2] == 'x') {
        if (from < lo) lo = from;
        if (to > hi) hi = to;
      }
    }
  }
  if (f) fclose(f);
  if (hi == 0) {
    fprintf(stderr, "steptrace: no code mapping of %s found\n", exe);
    kill(pid, SIGKILL);
    return 1;
  }

  /* One bit per 16 bytes of code: an address is written once. */
  uint8_t *seen = calloc((hi - lo) / 16 / 8 + 1, 1);
  uint64_t steps = 0;
  int signal = 0;
  for (;;) {
    if (ptrace(PTRACE_SINGLESTEP, pid, 0, signal) < 0) break;
    if (waitpid(pid, &status, 0) < 0 || WIFEXITED(status) || WIFSIGNALED(status)) break;
    /* Deliver signals the program gets (not our own single-step traps). */
    signal = WIFSTOPPED(status) && WSTOPSIG(status) != SIGTRAP ? WSTOPSIG(status) : 0;
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) < 0) break;
    steps++;
    if (regs.rip >= lo && regs.rip < hi) {
      uint64_t granule = (regs.rip - lo) / 16;
      if (!(seen[granule / 8] & (1u << (granule % 8)))) {
        seen[granule / 8] |= 1u << (granule % 8);
        fprintf(out, "%llx\n", (unsigned long long)(regs.rip - base));
      }
    }
  }
  fclose(out);
  fprintf(stderr, "steptrace: %llu instructions\n", (unsigned long long)steps);
  return 0;
}
