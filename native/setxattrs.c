/*
 * isola-setxattrs: apply extended attributes to many files in one process (Node.js has no
 * setxattr). Reads records from stdin, each three NUL-terminated fields:
 *   PATH \0 NAME \0 HEXVALUE \0
 * and calls lsetxattr(PATH, NAME, VALUE) (never following a final symlink). The caller has
 * checked that every PATH lies inside the tree it unpacked. Prints "applied N failed M" on stdout
 * and one line per failure on stderr; exits 0 unless stdin is malformed (2).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(void) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (!buf) return 2;
  for (;;) {
    if (len == cap) {
      cap *= 2;
      char *nb = realloc(buf, cap);
      if (!nb) return 2;
      buf = nb;
    }
    size_t n = fread(buf + len, 1, cap - len, stdin);
    if (n == 0) break;
    len += n;
  }
  unsigned long applied = 0, failed = 0;
  size_t i = 0;
  while (i < len) {
    char *fields[3];
    for (int f = 0; f < 3; f++) {
      char *end = memchr(buf + i, '\0', len - i);
      if (!end) {
        fprintf(stderr, "isola-setxattrs: truncated record\n");
        return 2;
      }
      fields[f] = buf + i;
      i = (size_t)(end - buf) + 1;
    }
    size_t hl = strlen(fields[2]);
    if (hl % 2) {
      fprintf(stderr, "isola-setxattrs: odd hex value for %s\n", fields[1]);
      return 2;
    }
    unsigned char *val = (unsigned char *)fields[2]; /* decode in place */
    for (size_t k = 0; k < hl / 2; k++) {
      int hi = hexval(fields[2][2 * k]), lo = hexval(fields[2][2 * k + 1]);
      if (hi < 0 || lo < 0) {
        fprintf(stderr, "isola-setxattrs: bad hex value for %s\n", fields[1]);
        return 2;
      }
      val[k] = (unsigned char)(hi * 16 + lo);
    }
    if (lsetxattr(fields[0], fields[1], val, hl / 2, 0) == 0) {
      applied++;
    } else {
      failed++;
      fprintf(stderr, "%s: %s: %s\n", fields[0], fields[1], strerror(errno));
    }
  }
  printf("applied %lu failed %lu\n", applied, failed);
  return 0;
}
