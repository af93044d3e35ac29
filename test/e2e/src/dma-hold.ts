/**
 * `dmahold`: a tiny static guest program that makes a missing dirty-log entry visible.
 *
 * It keeps one 8 MiB buffer for its whole life and cycles:
 * ```
 *   memset(buf, fill)          CPU write: QEMU's own dirty tracking sees it, the page is re-sent
 *   sleep                      precopy copies the filled pages
 *   pread(O_DIRECT) into buf   the back-end writes the SAME pages (device DMA)
 *   verify, sleep, verify...   against the pattern, which it computes itself
 * ```
 * During a live migration the DMA write is known to QEMU only through the back-end's dirty log
 * (VHOST_F_LOG_ALL). A page the back-end does not log reaches the destination with the fill
 * byte, and the verifications after the switch-over report it. Busybox cannot do this: its `dd`
 * reads into fresh pages and hands them on at once.
 *
 * The held area's pattern: 32-bit word i (little endian) = {@link heldWord}(i), so host and
 * guest agree without shipping digests.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { which } from './env.js';
import { defaultCacheDir } from './initramfs.js';

/** Word `i` of the held area (an integer mix of the index and the seed). */
export function heldWord(i: number, seed: number): number {
  let x = (i ^ seed) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The held area's bytes. */
export function heldBytes(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size / 4; i++) out.writeUInt32LE(heldWord(i, seed), i * 4);
  return out;
}

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint32_t word(uint32_t i, uint32_t seed) {
  uint32_t x = i ^ seed;
  x = (x ^ (x >> 16)) * 0x45d9f3bu;
  x = (x ^ (x >> 16)) * 0x45d9f3bu;
  return x ^ (x >> 16);
}

/* pages (4 KiB) of buf that differ from want */
static long bad_pages(const uint32_t *buf, const uint32_t *want, long len) {
  long bad = 0;
  for (long p = 0; p < len; p += 4096) {
    if (memcmp((const char *)buf + p, (const char *)want + p, 4096) != 0) bad++;
  }
  return bad;
}

static void nap(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

/* dmahold DEV OFFSET LEN SEED STOPFILE: cycles until STOPFILE exists; exit status 1 if any page was ever wrong */
int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: dmahold DEV OFFSET LEN SEED STOPFILE\n"); return 2; }
  long off = atol(argv[2]), len = atol(argv[3]);
  uint32_t seed = (uint32_t)strtoul(argv[4], NULL, 10);
  int fd = open(argv[1], O_RDONLY | O_DIRECT);
  if (fd < 0) { perror("open"); return 2; }
  uint32_t *buf = aligned_alloc(4096, len), *want = aligned_alloc(4096, len);
  if (buf == NULL || want == NULL) return 2;
  long cycles = 0, checks = 0, badTotal = 0;
  for (long i = 0; i < len / 4; i++) want[i] = word((uint32_t)i, seed);
  while (access(argv[5], F_OK) != 0) {
    memset(buf, 0xa5 ^ (int)(cycles & 0xff), len);
    nap(400);
    if (pread(fd, buf, len, off) != len) { perror("pread"); return 2; }
    for (int k = 0; k < 3; k++) {
      long bad = bad_pages(buf, want, len);
      checks++;
      if (bad > 0) { printf("VERIFY_FAIL dmahold cycle=%ld check=%d bad_pages=%ld\n", cycles, k, bad); fflush(stdout); }
      badTotal += bad;
      nap(400);
    }
    cycles++;
    printf("DMAHOLD.cycle=%ld\n", cycles); fflush(stdout);
  }
  printf("DMAHOLD.cycles=%ld\nDMAHOLD.checks=%ld\nDMAHOLD.bad=%ld\n", cycles, checks, badTotal);
  return badTotal > 0 ? 1 : 0;
}
`;

/**
 * Compiles `dmahold` statically with the host's C compiler (cached by source hash); null when
 * there is no compiler.
 */
export function buildDmaHold(): string | null {
  const cc = which('gcc') ?? which('cc');
  if (cc === null) return null;
  const key = createHash('sha256').update(SOURCE).digest('hex').slice(0, 16);
  const dir = defaultCacheDir();
  const out = join(dir, `dmahold-${key}`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  const src = `${out}.${process.pid}.c`;
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(src, SOURCE);
  try {
    execFileSync(cc, ['-static', '-O2', '-o', tmp, src], { stdio: 'pipe' });
  } finally {
    rmSync(src, { force: true });
  }
  renameSync(tmp, out);
  return out;
}
