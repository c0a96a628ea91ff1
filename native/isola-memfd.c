// isola-memfd: holds a snapshot's guest memory in a sealed memfd that clones map privately.
//
//   isola-memfd FILE
//
// Copies FILE's data (only its data extents: holes stay holes) into a new memfd, seals it
// against every change (F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL), drops FILE's
// page cache, prints "ISOLA_MEMFD <fd>" on stdout and then holds the memfd until its stdin ends
// (its owner closed it or died; it also asks for SIGKILL on the owner's death).
//
// Why: a clone's QEMU maps the snapshot memory private (copy-on-write), but QEMU 7.2 opens the
// file read-write to do so, so a compromised QEMU could write the memory every other clone of
// the snapshot maps. A clone opens this memfd instead (through /proc/<pid>/fd/<fd>, passed in
// by isola-jail): a private writable mapping still works, but write(), fallocate() and shared
// writable mappings of the memfd fail for everyone, root included.
// Exit codes: 0 after stdin ended, 1 on any failure (stderr says).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static void die(const char *what) {
  fprintf(stderr, "isola-memfd: %s: %s\n", what, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fputs("usage: isola-memfd FILE\n", stderr);
    return 1;
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die("prctl");
  signal(SIGPIPE, SIG_IGN);
  int src = open(argv[1], O_RDONLY | O_CLOEXEC);
  if (src < 0) die(argv[1]);
  struct stat st;
  if (fstat(src, &st)) die("fstat");
  int mfd = memfd_create("isola-snapshot", MFD_ALLOW_SEALING);
  if (mfd < 0) die("memfd_create");
  if (ftruncate(mfd, st.st_size)) die("ftruncate");
  char *buf = malloc(CHUNK);
  if (!buf) die("malloc");
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = lseek(src, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      die("SEEK_DATA");
    }
    off_t hole = lseek(src, data, SEEK_HOLE);
    if (hole < 0) die("SEEK_HOLE");
    for (off_t at = data; at < hole;) {
      size_t want = (size_t)(hole - at < CHUNK ? hole - at : CHUNK);
      ssize_t n = pread(src, buf, want, at);
      if (n <= 0) die("read");
      for (ssize_t done = 0; done < n;) {
        ssize_t w = pwrite(mfd, buf + done, (size_t)(n - done), at + done);
        if (w <= 0) die("write");
        done += w;
      }
      at += n;
    }
    pos = hole;
  }
  free(buf);
  if (fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
    die("seal");
  // The data now lives in the memfd; the file's cached pages are a second copy.
  posix_fadvise(src, 0, 0, POSIX_FADV_DONTNEED);
  close(src);
  printf("ISOLA_MEMFD %d\n", mfd);
  fflush(stdout);
  for (;;) {
    char c;
    ssize_t n = read(STDIN_FILENO, &c, 1);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    return 0;
  }
}
