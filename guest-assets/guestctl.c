// guestctl: the few guest-side system calls the agent (Node.js) cannot make itself.
//
//   guestctl identity EPOCH_MS HOSTNAME ENTROPY_HEX
//       After a restore from a snapshot: set the wall clock (it continues from the snapshot
//       moment), set the hostname, mix fresh host entropy into the kernel's pool, credit it and
//       reseed the kernel CRNG at once, so that clones of one snapshot never draw the same random
//       numbers from getrandom() or /dev/urandom.
//   guestctl serve [PORT]
//       The same commands, one per line "ID CMD ARGS...", answered "ID STATUS" (see serve()).
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
  fprintf(stderr, "usage: guestctl identity EPOCH_MS HOSTNAME ENTROPY_HEX | guestctl flushbufs DEVICE | guestctl serve [PORT]\n");
  return 2;
}

// serve [PORT]: one command per line, "ID CMD ARGS...", each answered "ID STATUS" (0: done).
// The ID lets the host skip answers that were still queued in the port when a snapshot was
// taken (a clone's virtio-serial queues come back as they were). PORT is the control port
// (/dev/virtio-ports/isola.ctl): the agent starts this once at boot, so after a restore the
// host reaches plain C through the kernel, with no JavaScript to translate first under TCG.
// Without PORT: stdin and stdout.
static int serve(const char *port) {
  int in = 0, out = 1;
  if (port) {
    in = out = open(port, O_RDWR | O_CLOEXEC);
    if (in < 0) return fail(port);
  }
  char buf[4096];
  size_t len = 0;
  useconds_t idle = 2000;
  for (;;) {
    ssize_t n = read(in, buf + len, sizeof buf - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("read");
    if (n == 0) {
      if (!port) return 0;
      // No host on the other end of the port (yet, or any more): wait for one.
      usleep(idle);
      if (idle < 100000) idle *= 2;
      continue;
    }
    idle = 2000;
    len += (size_t)n;
    buf[len] = 0;
    char *nl;
    while ((nl = memchr(buf, '\n', len))) {
      *nl = 0;
      char *argv[8] = {"guestctl"};
      int argc = 1;
      char *save = NULL;
      char *id = strtok_r(buf, " ", &save);
      for (char *tok; id && argc < 7 && (tok = strtok_r(NULL, " ", &save));) argv[argc++] = tok;
      argv[argc] = NULL;
      if (id) {
        int rc = argc > 1 ? dispatch(argc, argv) : 2;
        char answer[128];
        int m = snprintf(answer, sizeof answer, "%.64s %d\n", id, rc);
        if (write(out, answer, (size_t)m) < 0 && errno != EPIPE) return fail("write");
      }
      size_t used = (size_t)(nl - buf) + 1;
      memmove(buf, nl + 1, len - used);
      len -= used;
    }
    if (len == sizeof buf - 1) len = 0; // an overlong line: drop it
  }
}

int main(int argc, char **argv) {
  if ((argc == 2 || argc == 3) && !strcmp(argv[1], "serve")) return serve(argc == 3 ? argv[2] : NULL);
  return dispatch(argc, argv);
}
