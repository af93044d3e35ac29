/*
 * blk-loadgen: a small vhost-user-blk front-end in C (the guest's role, as QEMU plays it), for
 * the virtio-blk bench when the TypeScript load generator (bench/src/blk/loadgen.ts) would be
 * the bottleneck. Same flags, same workload and the same one-line JSON result, so
 * bench/src/blk/matrix.ts can run either.
 *
 *   blk-loadgen --socket S --pattern randread|randwrite|read|write --bs N --qd N
 *               [--queues 1] [--queue-size 256] [--duration 5] [--warmup 1] [--seed 1] [--no-event-idx]
 *
 * Per queue (split ring): keep `qd` requests in flight (header, data, status — each slot's
 * descriptors and buffers fixed at start), collect used elements, check every status byte,
 * resubmit, publish once, kick when the device asks (EVENT_IDX or VRING_USED_F_NO_NOTIFY).
 * One thread serves every queue (as one guest vCPU would), blocking in poll() on all call
 * eventfds; with --queues N > 1 each queue has its own ring, slots and call/kick eventfds and
 * the result adds per-queue IOPS and p99. Latency = submit → completion seen, in ns.
 * Exit 0 when the run completed (the line may report errors), 1 when it could not run, 2 on
 * bad flags.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* vhost-user requests (QEMU docs/interop/vhost-user.rst). */
enum {
  GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5, SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12,
  SET_VRING_CALL = 13, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
  SET_VRING_ENABLE = 18, GET_CONFIG = 24,
};
#define VHOST_USER_VERSION 0x1
#define VHOST_USER_REPLY 0x4
#define F_PROTOCOL_FEATURES 30
#define PROTO_F_CONFIG 9
#define VIRTIO_F_VERSION_1 32
#define RING_F_EVENT_IDX 29
#define BLK_F_SIZE_MAX 1
#define BLK_F_SEG_MAX 2
#define BLK_F_BLK_SIZE 6
#define BLK_F_FLUSH 9
#define BLK_F_MQ 12
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_S_OK 0
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define USED_F_NO_NOTIFY 1
#define STATUS_SENTINEL 0xff
#define BIT(n) (1ULL << (n))

struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct used_elem { uint32_t id; uint32_t len; };

static const char* g_socket = "";

/* One JSON failure line on stdout, exit 1. */
static void fail(const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("{\"ok\":false,\"error\":\"");
  for (const char* p = msg; *p; p++) {
    if (*p == '"' || *p == '\\') putchar('\\');
    putchar(*p == '\n' ? ' ' : *p);
  }
  printf("\",\"socket\":\"%s\"}\n", g_socket);
  exit(1);
}

static void usage(const char* why) {
  fprintf(stderr, "blk-loadgen: %s\n", why);
  exit(2);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---- vhost-user messages ---------------------------------------------------------------- */

static int g_sock = -1;

static void send_msg(uint32_t req, const void* payload, uint32_t size, const int* fds, int nfds) {
  uint32_t hdr[3] = { req, VHOST_USER_VERSION, size };
  struct iovec iov[2] = { { hdr, sizeof hdr }, { (void*)payload, size } };
  char cbuf[CMSG_SPACE(8 * sizeof(int))];
  struct msghdr m = { 0 };
  m.msg_iov = iov;
  m.msg_iovlen = size > 0 ? 2 : 1;
  if (nfds > 0) {
    memset(cbuf, 0, sizeof cbuf);
    m.msg_control = cbuf;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  ssize_t n = sendmsg(g_sock, &m, MSG_NOSIGNAL);
  if (n != (ssize_t)(sizeof hdr + size)) fail("sendmsg request %u: %s", req, n < 0 ? strerror(errno) : "short write");
}

static void read_full(void* buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(g_sock, (char*)buf + got, len - got);
    if (n == 0) fail("back-end closed the connection");
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("read: %s", strerror(errno));
    }
    got += (size_t)n;
  }
}

/* Reads the reply to `req` into `out` (exactly `size` bytes of payload expected). */
static void recv_reply(uint32_t req, void* out, uint32_t size) {
  uint32_t hdr[3];
  read_full(hdr, sizeof hdr);
  if (hdr[0] != req || !(hdr[1] & VHOST_USER_REPLY)) fail("reply to %u: got request %u flags 0x%x", req, hdr[0], hdr[1]);
  if (hdr[2] != size) fail("reply to %u: %u payload bytes, expected %u", req, hdr[2], size);
  read_full(out, size);
}

static uint64_t get_u64(uint32_t req) {
  send_msg(req, NULL, 0, NULL, 0);
  uint64_t v;
  recv_reply(req, &v, sizeof v);
  return v;
}

static void set_u64(uint32_t req, uint64_t v) { send_msg(req, &v, sizeof v, NULL, 0); }

static void set_state(uint32_t req, uint32_t index, uint32_t num) {
  uint32_t s[2] = { index, num };
  send_msg(req, s, sizeof s, NULL, 0);
}

static void set_fd(uint32_t req, uint32_t index, int fd) {
  uint64_t v = index;
  send_msg(req, &v, sizeof v, &fd, 1);
}

/* ---- latency histograms: fixed-width buckets up to 50 ms, then one overflow bucket ------- */

#define HIST_RANGE_NS 50e6
struct hist {
  double bucket_ns;
  size_t buckets;
  uint32_t* count;
  uint64_t n;
  double sum, max;
};

static void hist_init(struct hist* h, double bucket_ns) {
  h->bucket_ns = bucket_ns;
  h->buckets = (size_t)(HIST_RANGE_NS / bucket_ns);
  h->count = calloc(h->buckets + 1, sizeof *h->count);
  if (h->count == NULL) fail("out of memory");
}

static void hist_reset(struct hist* h) {
  memset(h->count, 0, (h->buckets + 1) * sizeof *h->count);
  h->n = 0;
  h->sum = 0;
  h->max = 0;
}

static void hist_record(struct hist* h, double ns) {
  size_t b = ns <= 0 ? 0 : (size_t)(ns / h->bucket_ns);
  if (b > h->buckets) b = h->buckets;
  h->count[b]++;
  h->n++;
  h->sum += ns;
  if (ns > h->max) h->max = ns;
}

/* The bucket's upper edge holding quantile q (clamped to the largest value seen). */
static double hist_quantile(const struct hist* h, double q) {
  if (h->n == 0) return 0;
  uint64_t rank = (uint64_t)(q * (double)(h->n - 1)) + 1, seen = 0;
  for (size_t b = 0; b <= h->buckets; b++) {
    seen += h->count[b];
    if (seen >= rank) {
      double edge = (double)(b + 1) * h->bucket_ns;
      return edge < h->max ? edge : h->max;
    }
  }
  return h->max;
}

/* ---- the run ---------------------------------------------------------------------------- */

static uint64_t g_rng;

static uint32_t xorshift32(void) {
  uint32_t x = (uint32_t)g_rng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  g_rng = x;
  return x;
}

/* ---- the driver side of a ring -------------------------------------------------------- */

/* One split ring as the driver sees it, and the request slots that feed it: slot s owns
 * descriptors [s * chain, (s + 1) * chain), set up once; a submit rewrites only the header's
 * sector and the status byte. */
struct ring {
  volatile uint16_t* avail;       /* flags, idx, ring[qs], used_event */
  volatile uint16_t* used16;      /* flags, idx */
  volatile struct used_elem* used;
  volatile uint16_t* avail_event; /* after used.ring[qs] */
  int kickfd, callfd;
  uint32_t qs, chain, qd;
  int event_idx, is_read, is_random;
  uint64_t bs, blocks, seq_block;
  uint32_t** slot_hdr;
  volatile uint8_t** slot_status;
  uint8_t* slot_busy;
  double* submit_at;
  uint16_t avail_idx, kicked_idx, last_used;
  uint32_t inflight;
  uint64_t kicks, calls, stalls, completed, bytes, errors, len_mismatches;
  struct hist lat;
};

/* Puts slot s's request (next block of the pattern) in the avail ring; not yet published. */
static void submit(struct ring* r, uint32_t s, double t) {
  uint64_t block;
  if (r->is_random) {
    block = xorshift32() % r->blocks;
  } else {
    block = r->seq_block;
    r->seq_block = block + 1 == r->blocks ? 0 : block + 1;
  }
  uint64_t sector = block * r->bs / 512;
  uint32_t* h = r->slot_hdr[s];
  h[0] = r->is_read ? BLK_T_IN : BLK_T_OUT;
  h[1] = 0;
  h[2] = (uint32_t)sector;
  h[3] = (uint32_t)(sector >> 32);
  *r->slot_status[s] = STATUS_SENTINEL;
  r->avail[2 + (r->avail_idx & (r->qs - 1))] = (uint16_t)(s * r->chain);
  r->avail_idx++;
  r->submit_at[s] = t;
  r->slot_busy[s] = 1;
  r->inflight++;
}

/* Publishes avail.idx and kicks when the device asks (virtio 1.2 §2.7.13). */
static void flush(struct ring* r) {
  __atomic_store_n(&r->avail[1], r->avail_idx, __ATOMIC_SEQ_CST);
  int need;
  if (r->event_idx) {
    uint16_t ev = __atomic_load_n(r->avail_event, __ATOMIC_ACQUIRE);
    need = (uint16_t)(r->avail_idx - ev - 1) < (uint16_t)(r->avail_idx - r->kicked_idx);
  } else {
    need = !(__atomic_load_n(&r->used16[0], __ATOMIC_ACQUIRE) & USED_F_NO_NOTIFY);
  }
  if (need && r->avail_idx != r->kicked_idx) {
    uint64_t one = 1;
    if (write(r->kickfd, &one, 8) != 8) fail("kick: %s", strerror(errno));
    r->kicks++;
  }
  r->kicked_idx = r->avail_idx;
}

/* Collects what the device used, resubmits (while `running`), publishes, re-arms interrupts.
 * `all` records every latency too. Returns 1 when the used ring moved again meanwhile (the
 * caller comes back after serving the other queues: one pass per queue per round, so a device
 * that keeps one queue busy cannot keep the driver away from the others). */
static int collect(struct ring* r, int running, struct hist* all, uint32_t expect_len) {
  double t = now_ns();
  uint16_t uidx = __atomic_load_n(&r->used16[1], __ATOMIC_ACQUIRE);
  if ((uint16_t)(uidx - r->last_used) > r->inflight) fail("used.idx moved from %u to %u with %u in flight", r->last_used, uidx, r->inflight);
  while (r->last_used != uidx) {
    struct used_elem e = r->used[r->last_used & (r->qs - 1)];
    r->last_used++;
    uint32_t s = e.id / r->chain;
    if (e.id % r->chain != 0 || s >= r->qd || !r->slot_busy[s]) fail("used id %u belongs to no request in flight", e.id);
    r->slot_busy[s] = 0;
    r->inflight--;
    if (running) { /* the drain after the window is not measured */
      hist_record(&r->lat, t - r->submit_at[s]);
      hist_record(all, t - r->submit_at[s]);
    }
    r->completed++;
    if (*r->slot_status[s] != BLK_S_OK) r->errors++;
    else r->bytes += r->bs;
    if (e.len != expect_len) r->len_mismatches++;
    if (running) submit(r, s, t);
  }
  flush(r);
  /* Re-arm interrupts, then look again (a completion published meanwhile sends no call). */
  if (r->event_idx) __atomic_store_n(&r->avail[2 + r->qs], r->last_used, __ATOMIC_SEQ_CST);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return __atomic_load_n(&r->used16[1], __ATOMIC_ACQUIRE) != r->last_used;
}

static double arg_num(const char* name, const char* v, double min) {
  char* end;
  double n = strtod(v, &end);
  if (*v == '\0' || *end != '\0' || !(n >= min)) {
    char why[128];
    snprintf(why, sizeof why, "bad --%s %s", name, v);
    usage(why);
  }
  return n;
}

#define MAX_QUEUES 16

int main(int argc, char** argv) {
  const char* pattern = "randread";
  double bs = 4096, qd = 1, queues = 1, qsize = 256, duration = 5, warmup = 1, seed = 1;
  int event_idx = 1;
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    if (strcmp(a, "--no-event-idx") == 0) { event_idx = 0; continue; }
    if (i + 1 >= argc) usage("flag without a value");
    const char* v = argv[++i];
    if (strcmp(a, "--socket") == 0) g_socket = v;
    else if (strcmp(a, "--pattern") == 0) pattern = v;
    else if (strcmp(a, "--bs") == 0) bs = arg_num("bs", v, 512);
    else if (strcmp(a, "--qd") == 0) qd = arg_num("qd", v, 1);
    else if (strcmp(a, "--queues") == 0) queues = arg_num("queues", v, 1);
    else if (strcmp(a, "--queue-size") == 0) qsize = arg_num("queue-size", v, 2);
    else if (strcmp(a, "--duration") == 0) duration = arg_num("duration", v, 0.05);
    else if (strcmp(a, "--warmup") == 0) warmup = arg_num("warmup", v, 0);
    else if (strcmp(a, "--seed") == 0) seed = arg_num("seed", v, 0);
    else usage("unknown flag");
  }
  if (*g_socket == '\0') usage("--socket is required");
  int is_read = strcmp(pattern, "randread") == 0 || strcmp(pattern, "read") == 0;
  int is_random = strcmp(pattern, "randread") == 0 || strcmp(pattern, "randwrite") == 0;
  if (!is_read && strcmp(pattern, "randwrite") != 0 && strcmp(pattern, "write") != 0) usage("bad --pattern");
  if ((uint64_t)bs % 512 != 0) usage("--bs must be a multiple of 512");
  if (queues > MAX_QUEUES || queues != (uint32_t)queues) usage("--queues must be an integer in 1..16");
  const uint32_t QS = (uint32_t)qsize, QD = (uint32_t)qd, NQ = (uint32_t)queues;
  const uint64_t BS = (uint64_t)bs;
  if (QS & (QS - 1)) usage("--queue-size must be a power of two");
  g_rng = (uint32_t)(seed * 7919) == 0 ? 0x9e3779b9u : (uint32_t)(seed * 7919);
  struct hist all;
  hist_init(&all, 25.0);

  g_sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(g_socket) >= sizeof sa.sun_path) fail("socket path too long");
  strcpy(sa.sun_path, g_socket);
  double deadline = now_ns() + 5e9;
  while (connect(g_sock, (struct sockaddr*)&sa, sizeof sa) != 0) {
    if (now_ns() > deadline) fail("connect %s: %s", g_socket, strerror(errno));
    usleep(20000);
  }

  /* Negotiation. */
  send_msg(SET_OWNER, NULL, 0, NULL, 0);
  uint64_t offered = get_u64(GET_FEATURES);
  if (!(offered & BIT(VIRTIO_F_VERSION_1))) fail("back-end does not offer VIRTIO_F_VERSION_1");
  if (!(offered & BIT(F_PROTOCOL_FEATURES))) fail("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
  if (NQ > 1 && !(offered & BIT(BLK_F_MQ))) fail("back-end does not offer VIRTIO_BLK_F_MQ");
  uint64_t want = BIT(VIRTIO_F_VERSION_1) | BIT(F_PROTOCOL_FEATURES) | BIT(BLK_F_SIZE_MAX) | BIT(BLK_F_SEG_MAX)
    | BIT(BLK_F_BLK_SIZE) | BIT(BLK_F_FLUSH) | (event_idx ? BIT(RING_F_EVENT_IDX) : 0) | (NQ > 1 ? BIT(BLK_F_MQ) : 0);
  uint64_t features = offered & want;
  uint64_t proto = get_u64(GET_PROTOCOL_FEATURES);
  if (!(proto & BIT(PROTO_F_CONFIG))) fail("back-end does not offer PROTOCOL_F_CONFIG (capacity unknown)");
  set_u64(SET_PROTOCOL_FEATURES, BIT(PROTO_F_CONFIG));
  set_u64(SET_FEATURES, features);
  const int use_event_idx = (features & BIT(RING_F_EVENT_IDX)) != 0;

  /* Config space: capacity (sectors, offset 0), size_max (offset 8), num_queues (offset 34). */
  struct { uint32_t offset, size, flags; uint8_t data[36]; } cfg = { 0, 36, 0, { 0 } };
  send_msg(GET_CONFIG, &cfg, sizeof cfg, NULL, 0);
  recv_reply(GET_CONFIG, &cfg, sizeof cfg);
  uint64_t capacity_sectors;
  uint32_t size_max;
  uint16_t num_queues;
  memcpy(&capacity_sectors, cfg.data, 8);
  memcpy(&size_max, cfg.data + 8, 4);
  memcpy(&num_queues, cfg.data + 34, 2);
  if (NQ > 1 && num_queues < NQ) fail("back-end has %u queues, %u asked", num_queues, NQ);
  const uint64_t capacity = capacity_sectors * 512;
  const uint64_t blocks = capacity / BS;
  if (blocks < 1) fail("device of %" PRIu64 " bytes is smaller than one %" PRIu64 "-byte block", capacity, BS);
  const uint64_t seg = (features & BIT(BLK_F_SIZE_MAX)) && size_max > 0 && size_max < BS ? size_max : BS;
  const uint32_t segs = (uint32_t)((BS + seg - 1) / seg);
  const uint32_t chain = segs + 2;
  if ((uint64_t)chain * QD > QS) fail("queue depth %u x %u descriptors exceeds the ring size %u", QD, chain, QS);

  /* Guest memory, per queue: rings, then per slot a 16-byte header, a status byte and 4 KiB-aligned data. */
  const uint64_t ring_bytes = (16ULL * QS + 4 + 2ULL * QS + 2 + 4095) / 4096 * 4096 + (4 + 8ULL * QS + 2 + 4095) / 4096 * 4096;
  const uint64_t slot_bytes = 4096 + ((BS + 4095) & ~4095ULL);
  const uint64_t queue_bytes = ring_bytes + QD * slot_bytes;
  uint64_t mem_size = NQ * queue_bytes + (1 << 20);
  mem_size = (mem_size + (2 << 20) - 1) & ~((uint64_t)(2 << 20) - 1);
  const uint64_t GPA = 0x100000;
  int memfd = memfd_create("blk-loadgen", MFD_CLOEXEC);
  if (memfd < 0 || ftruncate(memfd, (off_t)mem_size) != 0) fail("memfd: %s", strerror(errno));
  uint8_t* mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
  if (mem == MAP_FAILED) fail("mmap: %s", strerror(errno));
  struct { uint32_t n, pad; uint64_t gpa, size, uaddr, offset; } mt = { 1, 0, GPA, mem_size, (uint64_t)(uintptr_t)mem, 0 };
  send_msg(SET_MEM_TABLE, &mt, sizeof mt, &memfd, 1);

  const uint32_t expect_len = is_read ? (uint32_t)BS + 1 : 1;
  static struct ring rings[MAX_QUEUES];
  struct pollfd pfd[MAX_QUEUES];
  for (uint32_t q = 0; q < NQ; q++) {
    struct ring* r = &rings[q];
    uint8_t* base = mem + q * queue_bytes;
    const uint64_t gbase = GPA + q * queue_bytes;
    struct desc* desc = (struct desc*)base;
    uint64_t off = 16ULL * QS;
    r->avail = (volatile uint16_t*)(base + off);
    off = (off + 4 + 2ULL * QS + 2 + 4095) & ~4095ULL;
    r->used16 = (volatile uint16_t*)(base + off);
    r->used = (volatile struct used_elem*)(base + off + 4);
    r->avail_event = (volatile uint16_t*)(base + off + 4 + 8ULL * QS);
    const uint64_t used_off = off;
    off = (off + 4 + 8ULL * QS + 2 + 4095) & ~4095ULL;
    r->qs = QS; r->chain = chain; r->qd = QD;
    r->event_idx = use_event_idx; r->is_read = is_read; r->is_random = is_random; r->bs = BS; r->blocks = blocks;
    /* Sequential patterns: each queue walks its own stretch of the disk. */
    r->seq_block = blocks * q / NQ;
    r->slot_hdr = calloc(QD, sizeof *r->slot_hdr);
    r->slot_status = calloc(QD, sizeof *r->slot_status);
    r->submit_at = calloc(QD, sizeof *r->submit_at);
    r->slot_busy = calloc(QD, 1);
    if (!r->slot_hdr || !r->slot_status || !r->submit_at || !r->slot_busy) fail("out of memory");
    hist_init(&r->lat, 100.0);
    for (uint32_t s = 0; s < QD; s++) {
      uint8_t* sb = base + off + s * slot_bytes;
      uint64_t gpa = gbase + off + s * slot_bytes;
      r->slot_hdr[s] = (uint32_t*)sb;
      r->slot_status[s] = sb + 16;
      uint8_t* data = sb + 4096;
      if (!is_read) memset(data, 0x5a ^ (s & 0xff), BS); /* a pattern, not zero pages */
      uint32_t d0 = s * chain;
      desc[d0] = (struct desc){ gpa, 16, DESC_F_NEXT, (uint16_t)(d0 + 1) };
      for (uint32_t k = 0; k < segs; k++) {
        uint64_t len = BS - k * seg < seg ? BS - k * seg : seg;
        desc[d0 + 1 + k] = (struct desc){ gpa + 4096 + k * seg, (uint32_t)len,
          (uint16_t)(DESC_F_NEXT | (is_read ? DESC_F_WRITE : 0)), (uint16_t)(d0 + 2 + k) };
      }
      desc[d0 + chain - 1] = (struct desc){ gpa + 16, 1, DESC_F_WRITE, 0 };
    }
    r->kickfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->callfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->kickfd < 0 || r->callfd < 0) fail("eventfd: %s", strerror(errno));
    pfd[q] = (struct pollfd){ r->callfd, POLLIN, 0 };
    set_state(SET_VRING_NUM, q, QS);
    struct { uint32_t index, flags; uint64_t desc, used, avail, log; } va = {
      q, 0, (uint64_t)(uintptr_t)base, (uint64_t)(uintptr_t)(base + used_off),
      (uint64_t)(uintptr_t)(base + 16ULL * QS), 0 };
    send_msg(SET_VRING_ADDR, &va, sizeof va, NULL, 0);
    set_state(SET_VRING_BASE, q, 0);
    set_fd(SET_VRING_CALL, q, r->callfd);
    set_fd(SET_VRING_KICK, q, r->kickfd);
    set_state(SET_VRING_ENABLE, q, 1);
  }

  int running = 1;
  double t = now_ns();
  for (uint32_t q = 0; q < NQ; q++) {
    for (uint32_t s = 0; s < QD; s++) submit(&rings[q], s, t);
    flush(&rings[q]);
  }

  const double t_start = now_ns();
  const double t_measure = t_start + warmup * 1e9, t_end = t_measure + duration * 1e9;
  int measuring = 0;
  double cpu0 = 0, t0 = 0, seconds = 0, cpu = 0;
  uint64_t snap_completed = 0, snap_bytes = 0, snap_kicks = 0, snap_calls = 0, snap_stalls = 0, snap_len = 0;
  uint64_t snap_q[MAX_QUEUES] = { 0 };
  double drain_deadline = 0;

  for (;;) {
    for (int more = 1; more;) {
      more = 0;
      for (uint32_t q = 0; q < NQ; q++) more |= collect(&rings[q], running, &all, expect_len);
    }
    uint32_t inflight = 0;
    for (uint32_t q = 0; q < NQ; q++) inflight += rings[q].inflight;
    t = now_ns();
    if (!measuring && t >= t_measure) {
      measuring = 1;
      hist_reset(&all);
      for (uint32_t q = 0; q < NQ; q++) {
        struct ring* r = &rings[q];
        hist_reset(&r->lat);
        r->completed = r->bytes = r->kicks = r->calls = r->stalls = r->len_mismatches = 0;
      }
      cpu0 = cpu_seconds();
      t0 = t;
    }
    if (measuring && running && t >= t_end) {
      seconds = (t - t0) / 1e9;
      cpu = cpu_seconds() - cpu0;
      for (uint32_t q = 0; q < NQ; q++) {
        struct ring* r = &rings[q];
        snap_completed += r->completed; snap_bytes += r->bytes; snap_kicks += r->kicks; snap_calls += r->calls;
        snap_stalls += r->stalls; snap_len += r->len_mismatches;
        snap_q[q] = r->completed;
      }
      running = 0;
      drain_deadline = t + 3e9;
    }
    if (!running && (inflight == 0 || t > drain_deadline)) break;
    /* Wait for a call; after 100 ms without one, look at the rings anyway (a lost call). */
    int n = poll(pfd, NQ, 100);
    if (n < 0 && errno != EINTR) fail("poll: %s", strerror(errno));
    for (uint32_t q = 0; q < NQ; q++) {
      struct ring* r = &rings[q];
      if (n > 0 && (pfd[q].revents & POLLIN)) {
        uint64_t v;
        if (read(r->callfd, &v, 8) == 8) r->calls++;
      } else if (n == 0 && r->inflight > 0 && __atomic_load_n(&r->used16[1], __ATOMIC_ACQUIRE) != r->last_used) {
        r->stalls++;
      }
    }
  }

  uint32_t left = 0;
  uint64_t errors = 0;
  for (uint32_t q = 0; q < NQ; q++) { left += rings[q].inflight; errors += rings[q].errors; }
  const int ok = left == 0 && snap_completed > 0;
  const double us = 1e-3;
  printf("{\"ok\":%s,", ok ? "true" : "false");
  if (!ok) printf("\"error\":\"%s\",", snap_completed == 0 ? "no request completed in the measured window" : "requests still in flight 3 s after stop");
  printf("\"socket\":\"%s\",\"pattern\":\"%s\",\"blockSize\":%" PRIu64 ",\"queueDepth\":%u,\"queues\":%u,", g_socket, pattern, BS, QD, NQ);
  printf("\"seconds\":%.3f,\"requests\":%" PRIu64 ",\"iops\":%.0f,\"mbps\":%.1f,", seconds, snap_completed,
    seconds > 0 ? snap_completed / seconds : 0, seconds > 0 ? snap_bytes / seconds / 1e6 : 0);
  printf("\"latUs\":{\"mean\":%.2f,\"p50\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f},",
    all.n ? all.sum / all.n * us : 0, hist_quantile(&all, 0.5) * us, hist_quantile(&all, 0.99) * us, hist_quantile(&all, 0.999) * us, all.max * us);
  if (NQ > 1) {
    printf("\"perQueue\":[");
    for (uint32_t q = 0; q < NQ; q++) {
      printf("%s{\"iops\":%.0f,\"p99\":%.2f}", q ? "," : "", seconds > 0 ? snap_q[q] / seconds : 0, hist_quantile(&rings[q].lat, 0.99) * us);
    }
    printf("],");
  }
  printf("\"errors\":%" PRIu64 ",\"lenMismatches\":%" PRIu64 ",\"kicks\":%" PRIu64 ",\"calls\":%" PRIu64 ",\"stalls\":%" PRIu64 ",",
    errors, snap_len, snap_kicks, snap_calls, snap_stalls);
  printf("\"cpuSeconds\":%.3f,\"capacityBytes\":%" PRIu64 ",\"features\":\"0x%" PRIx64 "\",\"loadgen\":\"c\"}\n", cpu, capacity, features);
  fflush(stdout);
  close(g_sock);
  return ok ? 0 : 1;
}
