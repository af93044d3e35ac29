// fillRanges: memset of many byte ranges in one call, shared with helper threads.
//
// One thread filling memory runs at that thread's store bandwidth (~25 GB/s
// here), and a second thread on another core adds about as much again. A
// large fill (a null disk's 1 MiB read of zeros) is cut into 64 KiB pieces
// that the calling thread and up to two helper threads take in turn. The
// call is synchronous: it returns only when every piece is done, so no
// helper touches the memory once the caller goes on, and a buffer cannot be
// unmapped meanwhile (JS is inside this call; its views hold the buffers).
//
// The job lives in one process-wide pool. Its claim word packs the job
// number, the piece count and the next free piece, so a helper that looked
// at an earlier job can never take a piece of a later one: its CAS fails.
// Another thread (a worker's environment) arriving while the pool is in use
// fills alone rather than wait.
//
// A helper that finished looks for the next job for kSpinNs before sleeping
// on a futex: under a stream of large reads the next job arrives within
// that time and costs no wake-up; an idle process has sleeping helpers. The
// caller, done with the pieces it could take, waits as long for the helpers'
// last pieces, then sleeps until the last one is done (a helper preempted
// mid-piece would otherwise hold it spinning for a scheduler slice).
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "sys.h"

namespace vts {

namespace {

constexpr size_t kPiece = 64 * 1024;
constexpr uint32_t kMaxPieces = 1024;  // one job: 64 MiB; a larger fill runs as several jobs
// Two threads of stores come close to what the memory takes; more mostly spin.
constexpr int kMaxHelpers = 2;
constexpr int64_t kSpinNs = 50 * 1000;
// Below this a fill is done by the caller alone: waking a helper costs more.
constexpr size_t kShareFrom = 2 * kPiece;

struct Range {
  uint8_t* p;
  size_t n;
};

// kPiece bytes (the last piece of a job: fewer) of the job's ranges laid end
// to end, starting `skip` bytes into range `range`: a run of 4 KiB guest
// pages is one piece, not sixteen.
struct Piece {
  uint32_t range;
  size_t skip;
  size_t n;
};

struct alignas(64) Pool {
  std::mutex owner;  // the thread running a job
  std::atomic<int> helpers{0};
  // Job data, written by the owner before `claim` publishes the job and
  // stable until every piece of it is done.
  const Range* ranges = nullptr;
  int value = 0;
  Piece pieces[kMaxPieces];
  // job << 32 | pieces << 16 | next. A successful CAS on it owns one piece.
  alignas(64) std::atomic<uint64_t> claim{0};
  alignas(64) std::atomic<uint32_t> done{0};  // futex word of a caller waiting for the last pieces
  std::atomic<int> callerWaits{0};
  alignas(64) std::atomic<uint32_t> job{0};  // futex word of sleeping helpers: the latest job number
  std::atomic<int> sleepers{0};
  alignas(64) std::atomic<uint64_t> jobs{0};
  std::atomic<uint64_t> helperPieces{0};
};

Pool gPool;
std::once_flag gStarted;

inline void CpuRelax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

int64_t NowNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

long Futex(std::atomic<uint32_t>* word, int op, uint32_t val) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, nullptr, nullptr, 0);
}

// Takes the next piece of whatever job is current; false when none is left.
bool ClaimPiece(uint32_t* index) {
  uint64_t v = gPool.claim.load(std::memory_order_acquire);
  for (;;) {
    const uint32_t next = static_cast<uint32_t>(v & 0xffff), count = static_cast<uint32_t>((v >> 16) & 0xffff);
    if (next >= count) return false;
    if (gPool.claim.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      *index = next;
      return true;
    }
  }
}

void FillPiece(const Piece& piece) {
  const Range* r = gPool.ranges + piece.range;
  size_t skip = piece.skip, left = piece.n;
  while (left != 0) {
    const size_t take = r->n - skip < left ? r->n - skip : left;
    std::memset(r->p + skip, gPool.value, take);
    left -= take;
    skip = 0;
    r++;
  }
}

// Fills pieces until none is left; returns how many this thread did.
uint32_t WorkPieces(bool helper) {
  uint32_t i, n = 0;
  while (ClaimPiece(&i)) {
    FillPiece(gPool.pieces[i]);
    gPool.done.fetch_add(1, std::memory_order_seq_cst);
    // A caller that gave up spinning sleeps until the last piece is done.
    if (helper && gPool.callerWaits.load(std::memory_order_seq_cst) != 0) Futex(&gPool.done, FUTEX_WAKE_PRIVATE, 1);
    n++;
  }
  return n;
}

void* HelperMain(void*) {
  uint32_t seen = gPool.job.load(std::memory_order_acquire);
  for (;;) {
    const uint32_t n = WorkPieces(true);
    if (n != 0) gPool.helperPieces.fetch_add(n, std::memory_order_relaxed);
    // Look for the next job for a while, then sleep until one is posted.
    const int64_t until = NowNs() + kSpinNs;
    bool fresh = false;
    for (unsigned spins = 0;; spins++) {
      if (gPool.job.load(std::memory_order_acquire) != seen) { fresh = true; break; }
      if ((spins & 63) == 63 && NowNs() >= until) break;
      CpuRelax();
    }
    if (!fresh) {
      gPool.sleepers.fetch_add(1, std::memory_order_seq_cst);
      while (gPool.job.load(std::memory_order_seq_cst) == seen) Futex(&gPool.job, FUTEX_WAIT_PRIVATE, seen);
      gPool.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
    seen = gPool.job.load(std::memory_order_acquire);
  }
  return nullptr;
}

// CPUs this process may run on (affinity, as libuv's available parallelism).
int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

void StartHelpers() {
  const int cpus = UsableCpus();
  const int want = cpus - 1 < kMaxHelpers ? cpus - 1 : kMaxHelpers;
  // Helpers take no asynchronous signals (they belong to the event loop's
  // thread); faults they raise (the SIGBUS guard's) still reach them.
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int started = 0;
  for (int i = 0; i < want; i++) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t t;
    if (pthread_create(&t, &attr, HelperMain, nullptr) == 0) {
      pthread_setname_np(t, "vts-fill");
      started++;
    }
    pthread_attr_destroy(&attr);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  gPool.helpers.store(started, std::memory_order_release);
}

// Runs one job of `count` pieces (already in gPool.pieces) with the helpers.
void RunJob(uint32_t count) {
  static uint32_t jobNumber = 0;  // guarded by gPool.owner
  jobNumber++;
  gPool.done.store(0, std::memory_order_relaxed);
  gPool.claim.store((static_cast<uint64_t>(jobNumber) << 32) | (static_cast<uint64_t>(count) << 16),
                    std::memory_order_release);
  gPool.job.store(jobNumber, std::memory_order_seq_cst);
  if (gPool.sleepers.load(std::memory_order_seq_cst) > 0) Futex(&gPool.job, FUTEX_WAKE_PRIVATE, kMaxHelpers);
  WorkPieces(false);
  // The pieces still out are being filled by helpers. One that was preempted
  // mid-piece may not run again for a scheduler slice: spin briefly, then
  // sleep until the helper finishing the last piece wakes us.
  const int64_t until = NowNs() + kSpinNs;
  for (unsigned spins = 0; gPool.done.load(std::memory_order_acquire) < count; spins++) {
    if ((spins & 63) == 63 && NowNs() >= until) {
      gPool.callerWaits.store(1, std::memory_order_seq_cst);
      for (uint32_t d; (d = gPool.done.load(std::memory_order_seq_cst)) < count;) Futex(&gPool.done, FUTEX_WAIT_PRIVATE, d);
      gPool.callerWaits.store(0, std::memory_order_relaxed);
      break;
    }
    CpuRelax();
  }
  gPool.jobs.fetch_add(1, std::memory_order_relaxed);
}

// Fills `count` ranges (none empty) with the helpers; the caller holds gPool.owner.
void FillShared(const Range* ranges, size_t count, int value) {
  gPool.ranges = ranges;
  gPool.value = value;
  uint32_t pieces = 0;
  size_t r = 0, skip = 0;
  while (r < count) {
    Piece piece{static_cast<uint32_t>(r), skip, 0};
    while (piece.n < kPiece && r < count) {
      const size_t take = ranges[r].n - skip < kPiece - piece.n ? ranges[r].n - skip : kPiece - piece.n;
      piece.n += take;
      skip += take;
      if (skip == ranges[r].n) {
        r++;
        skip = 0;
      }
    }
    gPool.pieces[pieces++] = piece;
    if (pieces == kMaxPieces) {
      RunJob(pieces);
      pieces = 0;
    }
  }
  if (pieces != 0) RunJob(pieces);
}

// Per-thread scratch (each environment's event-loop thread is the only user of
// its own); a re-entrant call, from a getter run by napi_get_element, is refused.
struct Scratch {
  bool busy = false;
  std::vector<double> plan;
  std::vector<napi_value> views;  // one per change of view index along the plan
  std::vector<Range> ranges;
};
thread_local Scratch tScratch;

struct BusyGuard {
  explicit BusyGuard(bool* b) : flag(b) { *flag = true; }
  ~BusyGuard() { *flag = false; }
  bool* flag;
};

// fillRanges(views: ArrayBufferView[], plan: Float64Array, count, value)
// plan: [viewIndex, byteOffset, byteLength] x count. Every range is checked
// before anything is written (EINVAL, nothing filled).
//
// Reading an element of `views` may run JS (an accessor, or a getter on
// Array.prototype for a hole), and that JS could unmap, detach or shrink a
// buffer, or detach the plan. So: the plan is copied first, then every view
// is fetched, and only then are the views' memory and the ranges checked,
// with no JS able to run between that check and the fill.
Napi::Value FillRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Scratch& s = tScratch;
  if (s.busy) return ThrowSys(env, EINVAL, "fillRanges", "called again while it reads its views");
  BusyGuard busy(&s.busy);
  if (info.Length() < 1 || !info[0].IsArray()) return ThrowArg(env, "fillRanges", "views must be an array");
  napi_value views = info[0];
  double* planPtr = nullptr;
  size_t planLen = 0;
  if (info.Length() < 2 || !Float64View(env, info[1], &planPtr, &planLen))
    return ThrowArg(env, "fillRanges", "plan must be a Float64Array");
  double count, value;
  if (!ArgInt(info, 2, "fillRanges", "count", 0, static_cast<double>(planLen / 3), &count) ||
      !ArgInt(info, 3, "fillRanges", "value", 0, 255, &value))
    return env.Undefined();
  const size_t n = static_cast<size_t>(count);
  // Copied once: a plan over a SharedArrayBuffer may change under us.
  s.plan.assign(planPtr, planPtr + 3 * n);
  uint32_t viewCount = 0;
  if (napi_get_array_length(env, views, &viewCount) != napi_ok)
    return ThrowArg(env, "fillRanges", "views must be an array");
  // Fetch the views (JS may run here). Consecutive ranges of one view (a
  // request's segments in one memory region) fetch it once.
  s.views.clear();
  double last = -1;
  for (size_t i = 0; i < n; i++) {
    const double vi = s.plan[3 * i];
    if (!IsIntIn(vi, 0, static_cast<double>(viewCount) - 1))
      return ThrowSys(env, EINVAL, "fillRanges", "a range names no view");
    if (vi == last) continue;
    napi_value v;
    if (napi_get_element(env, views, static_cast<uint32_t>(vi), &v) != napi_ok) {
      if (env.IsExceptionPending()) env.GetAndClearPendingException();
      return ThrowSys(env, EINVAL, "fillRanges", "a range names no view");
    }
    s.views.push_back(v);
    last = vi;
  }
  // Check every range against its view's memory as it is now. No JS runs
  // from here to the end of the fill.
  s.ranges.clear();
  size_t total = 0, at = 0;
  uint8_t* base = nullptr;
  size_t baseLen = 0;
  last = -1;
  for (size_t i = 0; i < n; i++) {
    const double vi = s.plan[3 * i], off = s.plan[3 * i + 1], len = s.plan[3 * i + 2];
    if (vi != last) {
      if (!ViewBytes(env, s.views[at++], &base, &baseLen))
        return ThrowSys(env, EINVAL, "fillRanges", "views must hold ArrayBufferViews");
      last = vi;
    }
    if (!IsIntIn(off, 0, kMaxSafe) || !IsIntIn(len, 0, kMaxSafe) || !(off + len <= static_cast<double>(baseLen)))
      return ThrowSys(env, EINVAL, "fillRanges", "a range lies outside its view");
    if (len != 0) s.ranges.push_back(Range{base + static_cast<size_t>(off), static_cast<size_t>(len)});
    total += static_cast<size_t>(len);
  }
  if (total >= kShareFrom) {
    std::call_once(gStarted, StartHelpers);
    if (gPool.helpers.load(std::memory_order_acquire) > 0 && gPool.owner.try_lock()) {
      FillShared(s.ranges.data(), s.ranges.size(), static_cast<int>(value));
      gPool.owner.unlock();
      return env.Undefined();
    }
  }
  for (const Range& r : s.ranges) std::memset(r.p, static_cast<int>(value), r.n);
  return env.Undefined();
}

// fillStats(): [helpers, shared jobs, pieces done by helpers] (tests, benches).
Napi::Value FillStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Napi::Number::New(env, gPool.helpers.load()));
  out.Set(1u, Napi::Number::New(env, static_cast<double>(gPool.jobs.load())));
  out.Set(2u, Napi::Number::New(env, static_cast<double>(gPool.helperPieces.load())));
  return out;
}

}  // namespace

void InitFillRanges(Napi::Env env, Napi::Object exports) {
  exports.Set("fillRanges", Napi::Function::New(env, FillRanges, "fillRanges"));
  exports.Set("fillStats", Napi::Function::New(env, FillStats, "fillStats"));
  exports.Set("fillSharedFrom", Napi::Number::New(env, static_cast<double>(kShareFrom)));
}

}  // namespace vts
