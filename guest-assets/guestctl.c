// guestctl: the few guest-side system calls the agent (Node.js) cannot make itself.
//
//   guestctl identity EPOCH_MS HOSTNAME ENTROPY_HEX
//       After a restore from a snapshot: set the wall clock (it continues from the snapshot
//       moment), set the hostname, mix fresh host entropy into the kernel's pool, credit it and
//       reseed the kernel CRNG at once, so that clones of one snapshot never draw the same random
//       numbers from getrandom() or /dev/urandom.
//   guestctl serve
//       The same commands, one per line on stdin, each answered by its status on stdout.
//   guestctl flushbufs DEVICE
//       Drop the kernel's cached blocks of a block device (BLKFLSBUF): a drive whose backing
//       file was swapped under a restored guest must not be read from stale cache.
//
// Static, no dependencies beyond libc; built by src/assets/build.ts into the guest image.

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTROPY_BYTES 512

static int fail(const char *what) {
  fprintf(stderr, "guestctl: %s: %s\n", what, strerror(errno));
  return 1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int identity(const char *epoch_ms, const char *hostname, const char *hex) {
  char *end;
  errno = 0;
  long long ms = strtoll(epoch_ms, &end, 10);
  if (errno || *end || ms <= 0) {
    fprintf(stderr, "guestctl: bad EPOCH_MS '%s'\n", epoch_ms);
    return 2;
  }
  size_t n = strlen(hex);
  if (n % 2 || n / 2 > MAX_ENTROPY_BYTES || n < 32) {
    fprintf(stderr, "guestctl: ENTROPY_HEX must be 16..%d bytes of hex\n", MAX_ENTROPY_BYTES);
    return 2;
  }
  struct {
    struct rand_pool_info info;
    unsigned char buf[MAX_ENTROPY_BYTES];
  } pool;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      fprintf(stderr, "guestctl: ENTROPY_HEX is not hex\n");
      return 2;
    }
    pool.buf[i] = (unsigned char)(hi << 4 | lo);
  }

  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) return fail("clock_settime");
  if (sethostname(hostname, strlen(hostname)) < 0) return fail("sethostname");

  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail("open /dev/urandom");
  pool.info.buf_size = (int)(n / 2);
  pool.info.entropy_count = (int)(n / 2) * 8;
  if (ioctl(fd, RNDADDENTROPY, &pool) < 0) return fail("RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) < 0) return fail("RNDRESEEDCRNG");
  close(fd);
  return 0;
}

static int flushbufs(const char *dev) {
  int fd = open(dev, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(dev);
  if (ioctl(fd, BLKFLSBUF, 0) < 0) return fail("BLKFLSBUF");
  close(fd);
  return 0;
}

static int dispatch(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "identity")) return identity(argv[2], argv[3], argv[4]);
  if (argc == 3 && !strcmp(argv[1], "flushbufs")) return flushbufs(argv[2]);
  fprintf(stderr, "usage: guestctl identity EPOCH_MS HOSTNAME ENTROPY_HEX | guestctl flushbufs DEVICE | guestctl serve\n");
  return 2;
}

// serve: one command per line on stdin ("identity MS HOST HEX"), one answer line on stdout
// ("0" or the exit status, after any message on stderr). The agent starts it once at boot, so a
// restored clone pays a pipe write instead of a fork and exec (slow right after a restore under
// TCG, which translates the code paths again).
static int serve(void) {
  char line[2048];
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin)) {
    char *argv[8] = {"guestctl"};
    int argc = 1;
    for (char *tok = strtok(line, " \n"); tok && argc < 7; tok = strtok(NULL, " \n")) argv[argc++] = tok;
    argv[argc] = NULL;
    int rc = argc > 1 ? dispatch(argc, argv) : 2;
    fflush(stderr);
    printf("%d\n", rc);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "serve")) return serve();
  return dispatch(argc, argv);
}
