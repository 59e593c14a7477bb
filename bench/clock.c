/* The clock of bench/ratio.sh, compiled by it with `cc -O2` (no dependency beyond libc).
 * Two roles, chosen by the name it is called under:
 *
 *   clock LOG CMD ARGS...   runs CMD and appends "run T0 T1 STATUS" to LOG: CLOCK_MONOTONIC in
 *                           seconds just before the fork and just after wait4. No shell between
 *                           the clock and the tool, so nothing but fork+exec is timed on top.
 *   restic ARGS...          (a copy named `restic`, first in PATH) the timestamping wrapper: appends
 *                           "restic T_EXEC T_EXIT HWM" to $BENCH_PHASE_LOG, where T_EXEC is taken
 *                           as the wrapper starts (right after igotchuu's, the floor's or plain
 *                           restic's exec of it), T_EXIT when the real restic ($BENCH_REAL_RESTIC)
 *                           has exited, and HWM is the VmHWM (KiB) of the wrapper's parent at that
 *                           moment: igotchuu's own peak RSS up to the end of restic, read by the
 *                           wrapper so the timed run has no poller beside it. `restic version` is
 *                           exec'd at once and logged as "version T": the cache of restic's version
 *                           (restic/version.rs) shows as no such line.
 *
 * Same clock on both sides (CLOCK_MONOTONIC is system-wide), so "before restic" is T_EXEC - T0 and
 * "after restic" is T1 - T_EXIT. The wrapper costs each tool one exec of this small static-free C
 * program (about 0.3 ms) and one fork (the real restic runs as its child); plain restic pays the
 * same, so the ratios compare like with like. SIGINT/SIGTERM/SIGHUP are passed on to restic.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void append(const char *log, const char *line) {
  int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) { perror(log); return; }
  if (write(fd, line, strlen(line)) < 0) perror(log);
  close(fd);
}

static pid_t child;
static void pass_on(int sig) { if (child > 0) kill(child, sig); }

static int wait_child(void) {
  int st = 0;
  while (waitpid(child, &st, 0) < 0) {
    if (errno != EINTR) { perror("waitpid"); return 127; }
  }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}

static long parent_hwm(void) {
  char path[64], line[256];
  long v = -1;
  snprintf(path, sizeof path, "/proc/%d/status", (int)getppid());
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0) { v = strtol(line + 6, NULL, 10); break; }
  fclose(f);
  return v;
}

static int wrapper(int argc, char **argv) {
  double t0 = now();
  const char *real = getenv("BENCH_REAL_RESTIC"), *log = getenv("BENCH_PHASE_LOG");
  char line[256];
  if (!real) { fprintf(stderr, "clock: BENCH_REAL_RESTIC is not set\n"); return 127; }
  (void)argc;
  argv[0] = (char *)real;
  if (argv[1] && strcmp(argv[1], "version") == 0) {
    if (log) { snprintf(line, sizeof line, "version %.6f\n", t0); append(log, line); }
    execv(real, argv);
    perror(real);
    return 127;
  }
  struct sigaction sa = {0};
  sa.sa_handler = pass_on;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  child = fork();
  if (child < 0) { perror("fork"); return 127; }
  if (child == 0) { execv(real, argv); perror(real); _exit(127); }
  int rc = wait_child();
  double t1 = now();
  if (log) {
    snprintf(line, sizeof line, "restic %.6f %.6f %ld\n", t0, t1, parent_hwm());
    append(log, line);
  }
  return rc;
}

int main(int argc, char **argv) {
  const char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  if (strcmp(base, "restic") == 0) return wrapper(argc, argv);
  if (argc < 3) { fprintf(stderr, "usage: clock LOG CMD ARGS...\n"); return 2; }
  char line[256];
  double t0 = now();
  child = fork();
  if (child < 0) { perror("fork"); return 127; }
  if (child == 0) { execvp(argv[2], argv + 2); perror(argv[2]); _exit(127); }
  int rc = wait_child();
  double t1 = now();
  snprintf(line, sizeof line, "run %.6f %.6f %d\n", t0, t1, rc);
  append(argv[1], line);
  return rc;
}
