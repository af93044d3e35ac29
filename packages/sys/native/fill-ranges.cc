// fillRanges: memset of many byte ranges in one call, shared with helper threads.
//
// One thread filling memory runs at that thread's store bandwidth (~25 GB/s
// here), and a second thread on another core adds about as much again. A
// large fill (a null disk's 1 MiB read of zeros) is cut into 64 KiB pieces
// that the calling thread and up to three helper threads take in turn. The
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
// that time and costs no wake-up; an idle process has sleeping helpers.
#include <linux/futex.h>
#include <pthread.h>
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
constexpr int kMaxHelpers = 3;
constexpr int64_t kSpinNs = 50 * 1000;
// Below this a job is filled by the caller alone: waking a helper costs more.
constexpr size_t kShareFrom = 2 * kPiece;

struct Piece {
  uint8_t* p;
  size_t n;
};

struct Pool {
  std::mutex owner;  // the thread running a job
  int helpers = 0;
  Piece pieces[kMaxPieces];
  int value = 0;
  // job << 32 | pieces << 16 | next. Written with release once the job's
  // pieces are in place; a successful CAS on it owns one piece.
  std::atomic<uint64_t> claim{0};
  std::atomic<uint32_t> done{0};
  std::atomic<uint32_t> job{0};  // futex word: the latest job number
  std::atomic<int> sleepers{0};
  std::atomic<uint64_t> jobs{0};
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

// Fills pieces until none is left; returns how many this thread did.
uint32_t WorkPieces() {
  uint32_t i, n = 0;
  while (ClaimPiece(&i)) {
    const Piece& piece = gPool.pieces[i];
    std::memset(piece.p, gPool.value, piece.n);
    gPool.done.fetch_add(1, std::memory_order_release);
    n++;
  }
  return n;
}

void* HelperMain(void*) {
  uint32_t seen = gPool.job.load(std::memory_order_acquire);
  for (;;) {
    const uint32_t n = WorkPieces();
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
      while (gPool.job.load(std::memory_order_seq_cst) == seen)
        ::syscall(SYS_futex, &gPool.job, FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
      gPool.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
    seen = gPool.job.load(std::memory_order_acquire);
  }
  return nullptr;
}

void StartHelpers() {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  const int want = cpus > 1 ? static_cast<int>(cpus - 1 < kMaxHelpers ? cpus - 1 : kMaxHelpers) : 0;
  // Helpers take no asynchronous signals (they belong to the event loop's
  // thread); faults they raise (the SIGBUS guard's) still reach them.
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 0; i < want; i++) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t t;
    if (pthread_create(&t, &attr, HelperMain, nullptr) == 0) {
      pthread_setname_np(t, "vts-fill");
      gPool.helpers++;
    }
    pthread_attr_destroy(&attr);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// Runs one job of `count` pieces (already in gPool.pieces) with the helpers.
void RunJob(uint32_t count) {
  static uint32_t jobNumber = 0;  // guarded by gPool.owner
  jobNumber++;
  gPool.done.store(0, std::memory_order_relaxed);
  gPool.claim.store((static_cast<uint64_t>(jobNumber) << 32) | (static_cast<uint64_t>(count) << 16),
                    std::memory_order_release);
  gPool.job.store(jobNumber, std::memory_order_seq_cst);
  if (gPool.sleepers.load(std::memory_order_seq_cst) > 0)
    ::syscall(SYS_futex, &gPool.job, FUTEX_WAKE_PRIVATE, gPool.helpers, nullptr, nullptr, 0);
  WorkPieces();
  while (gPool.done.load(std::memory_order_acquire) < count) CpuRelax();
  gPool.jobs.fetch_add(1, std::memory_order_relaxed);
}

struct Range {
  uint8_t* p;
  size_t n;
};

// Fills with the helpers; the caller holds gPool.owner.
void FillShared(const Range* ranges, size_t count, int value) {
  gPool.value = value;
  uint32_t pieces = 0;
  for (size_t r = 0; r < count; r++) {
    uint8_t* p = ranges[r].p;
    size_t left = ranges[r].n;
    while (left != 0) {
      const size_t n = left < kPiece ? left : kPiece;
      gPool.pieces[pieces++] = Piece{p, n};
      p += n;
      left -= n;
      if (pieces == kMaxPieces) {
        RunJob(pieces);
        pieces = 0;
      }
    }
  }
  if (pieces != 0) RunJob(pieces);
}

// fillRanges(views: ArrayBufferView[], plan: Float64Array, count, value)
// plan: [viewIndex, byteOffset, byteLength] x count. Every range is checked
// before anything is written (EINVAL, nothing filled).
Napi::Value FillRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) return ThrowArg(env, "fillRanges", "views must be an array");
  napi_value views = info[0];
  uint32_t viewCount = 0;
  napi_get_array_length(env, views, &viewCount);
  bool is = false;
  napi_typedarray_type type;
  size_t planLen = 0;
  void* planPtr = nullptr;
  if (info.Length() < 2 || napi_is_typedarray(env, info[1], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, info[1], &type, &planLen, &planPtr, nullptr, nullptr) != napi_ok ||
      type != napi_float64_array)
    return ThrowArg(env, "fillRanges", "plan must be a Float64Array");
  if (planPtr == nullptr) planLen = 0;
  double count, value;
  if (!ArgInt(info, 2, "fillRanges", "count", 0, static_cast<double>(planLen / 3), &count) ||
      !ArgInt(info, 3, "fillRanges", "value", 0, 255, &value))
    return env.Undefined();
  const double* plan = static_cast<const double*>(planPtr);
  const size_t n = static_cast<size_t>(count);
  // Ranges are resolved into a reused scratch list (the event-loop thread of
  // each environment is the only caller of its own list).
  thread_local std::vector<Range> ranges;
  ranges.clear();
  size_t total = 0;
  double lastIndex = -1;
  uint8_t* base = nullptr;
  size_t baseLen = 0;
  for (size_t i = 0; i < n; i++) {
    const double vi = plan[3 * i], off = plan[3 * i + 1], len = plan[3 * i + 2];
    if (!IsIntIn(vi, 0, static_cast<double>(viewCount) - 1))
      return ThrowSys(env, EINVAL, "fillRanges", "a range names no view");
    if (vi != lastIndex) {
      // Consecutive ranges of one view (a request's segments in one memory
      // region) look the view up once.
      napi_value v;
      if (napi_get_element(env, views, static_cast<uint32_t>(vi), &v) != napi_ok)
        return ThrowSys(env, EINVAL, "fillRanges", "a range names no view");
      if (!ViewBytes(env, v, &base, &baseLen))
        return ThrowSys(env, EINVAL, "fillRanges", "views must hold ArrayBufferViews");
      lastIndex = vi;
    }
    if (!IsIntIn(off, 0, kMaxSafe) || !IsIntIn(len, 0, kMaxSafe) || !(off + len <= static_cast<double>(baseLen)))
      return ThrowSys(env, EINVAL, "fillRanges", "a range lies outside its view");
    if (len != 0) ranges.push_back(Range{base + static_cast<size_t>(off), static_cast<size_t>(len)});
    total += static_cast<size_t>(len);
  }
  if (total >= kShareFrom) {
    std::call_once(gStarted, StartHelpers);
    if (gPool.helpers > 0 && gPool.owner.try_lock()) {
      FillShared(ranges.data(), ranges.size(), static_cast<int>(value));
      gPool.owner.unlock();
      return env.Undefined();
    }
  }
  for (const Range& r : ranges) std::memset(r.p, static_cast<int>(value), r.n);
  return env.Undefined();
}

// fillStats(): [helpers, shared jobs, pieces done by helpers] (tests, benches).
Napi::Value FillStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Napi::Number::New(env, gPool.helpers));
  out.Set(1u, Napi::Number::New(env, static_cast<double>(gPool.jobs.load())));
  out.Set(2u, Napi::Number::New(env, static_cast<double>(gPool.helperPieces.load())));
  return out;
}

}  // namespace

void InitFillRanges(Napi::Env env, Napi::Object exports) {
  exports.Set("fillRanges", Napi::Function::New(env, FillRanges, "fillRanges"));
  exports.Set("fillStats", Napi::Function::New(env, FillStats, "fillStats"));
}

}  // namespace vts
