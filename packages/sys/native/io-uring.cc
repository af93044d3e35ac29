// io_uring through raw syscalls (no liburing).
//
//   JS batch (Float64Array)                     kernel rings (one mmap)
//   ops:  [opcode, fd, off, ud, iovStart, iovCount, arg, arg2] x count
//   iovs: [bufIndex, byteOffset, byteLength] x ...
//        |  submit(): validate everything, then fill SQEs
//        v
//   SQ ring  head(kernel) .... tail(us, store-release) --> io_uring_enter
//   CQ ring  head(us, store-release) .... tail(kernel, load-acquire) <-- reap()
//
// Buffers are named by index into a table of ArrayBuffers (guest-memory
// slabs); each iovec triple is checked against the buffer's *current*
// byteLength at submit time, so a detached (munmapped) buffer cannot be
// handed to the kernel. iovecs are built in a scratch array that is reused
// on the next submit: IORING_FEAT_SUBMIT_STABLE guarantees the kernel has
// consumed them once io_uring_enter returns.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/io_uring.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "sys.h"

namespace vts {

namespace {

// Our stable op numbering (the JS IORING_OP constants). Zero is unused so a
// zero-filled record is rejected rather than read as an op.
enum VtsOp : int { kReadv = 1, kWritev = 2, kFsync = 3, kFdatasync = 4, kFallocate = 5, kRead = 6, kWrite = 7 };

constexpr int kOpStride = 8;
constexpr int kIovStride = 3;
constexpr unsigned kMaxBuffers = 1024;
constexpr double kMaxIovPerOp = 1024;  // UIO_MAXIOV
constexpr unsigned kMaxEntries = 4096;
constexpr uint64_t kInternalTag = 1ull << 40;  // user_data of close()'s cancel: above any u32

int SysSetup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, p));
}
int SysEnter(int fd, unsigned toSubmit, unsigned minComplete, unsigned flags, const void* arg = nullptr,
             size_t argSize = 0) {
  return static_cast<int>(::syscall(__NR_io_uring_enter, fd, toSubmit, minComplete, flags, arg, argSize));
}
int SysRegister(int fd, unsigned op, const void* arg, unsigned nr) {
  return static_cast<int>(::syscall(__NR_io_uring_register, fd, op, arg, nr));
}

inline unsigned LoadAcquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void StoreRelease(unsigned* p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

struct BufSlot {
  napi_ref ref = nullptr;
  bool whole = true;     // the whole ArrayBuffer, or a window of it
  size_t winOff = 0;
  size_t winLen = 0;
  uint64_t stamp = 0;    // submit() number the cache below belongs to
  uint8_t* base = nullptr;
  size_t size = 0;
};

}  // namespace

class IoUring : public Napi::ObjectWrap<IoUring> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "IoUring",
                       {InstanceMethod<&IoUring::SetBuffer>("setBuffer"), InstanceMethod<&IoUring::Submit>("submit"),
                        InstanceMethod<&IoUring::RunInline>("runInline"),
                        InstanceMethod<&IoUring::Reap>("reap"), InstanceMethod<&IoUring::Close>("close"),
                        InstanceMethod<&IoUring::CompletionsReady>("completionsReady"),
                        InstanceAccessor<&IoUring::GetEntries>("entries"),
                        InstanceAccessor<&IoUring::GetEventFd>("eventFd"),
                        InstanceAccessor<&IoUring::GetInflight>("inflight")});
  }

  explicit IoUring(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IoUring>(info) {
    Napi::Env env = info.Env();
    env_ = env;
    double entries;
    if (!ArgInt(info, 0, "io_uring_setup", "entries", 1, kMaxEntries, &entries)) return;
    unsigned n = static_cast<unsigned>(entries);
    if ((n & (n - 1)) != 0) {
      ThrowArg(env, "io_uring_setup", "entries must be a power of two");
      return;
    }
    io_uring_params p;
    std::memset(&p, 0, sizeof p);
    // SUBMIT_ALL: keep submitting after one SQE fails to initialise (its
    // error arrives as a CQE) instead of stopping mid-batch.
    p.flags = IORING_SETUP_SUBMIT_ALL;
    ringFd_ = SysSetup(n, &p);
    if (ringFd_ < 0 && errno == EINVAL) {
      std::memset(&p, 0, sizeof p);
      ringFd_ = SysSetup(n, &p);
    }
    if (ringFd_ < 0) {
      ringFd_ = -1;
      ThrowSys(env, errno, "io_uring_setup");
      return;
    }
    const unsigned need = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_SUBMIT_STABLE | IORING_FEAT_NODROP;
    if ((p.features & need) != need) {
      ThrowSys(env, EOPNOTSUPP, "io_uring_setup",
               "kernel lacks IORING_FEAT_SINGLE_MMAP, IORING_FEAT_SUBMIT_STABLE or IORING_FEAT_NODROP");
      return;  // the destructor releases what was set up
    }
    size_t sqSize = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cqSize = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    ringSize_ = sqSize > cqSize ? sqSize : cqSize;
    void* ring = ::mmap(nullptr, ringSize_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ringFd_,
                        IORING_OFF_SQ_RING);
    if (ring == MAP_FAILED) {
      ThrowSys(env, errno, "mmap");
      return;
    }
    ring_ = static_cast<uint8_t*>(ring);
    sqesSize_ = p.sq_entries * sizeof(io_uring_sqe);
    void* sqes = ::mmap(nullptr, sqesSize_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ringFd_,
                        IORING_OFF_SQES);
    if (sqes == MAP_FAILED) {
      ThrowSys(env, errno, "mmap");
      return;
    }
    sqes_ = static_cast<io_uring_sqe*>(sqes);
    sqHead_ = reinterpret_cast<unsigned*>(ring_ + p.sq_off.head);
    sqTail_ = reinterpret_cast<unsigned*>(ring_ + p.sq_off.tail);
    sqFlags_ = reinterpret_cast<unsigned*>(ring_ + p.sq_off.flags);
    sqMask_ = *reinterpret_cast<unsigned*>(ring_ + p.sq_off.ring_mask);
    sqEntries_ = p.sq_entries;
    cqHead_ = reinterpret_cast<unsigned*>(ring_ + p.cq_off.head);
    cqTail_ = reinterpret_cast<unsigned*>(ring_ + p.cq_off.tail);
    cqMask_ = *reinterpret_cast<unsigned*>(ring_ + p.cq_off.ring_mask);
    cqes_ = reinterpret_cast<io_uring_cqe*>(ring_ + p.cq_off.cqes);
    // SQE i always sits in array slot i: fill the indirection array once.
    unsigned* array = reinterpret_cast<unsigned*>(ring_ + p.sq_off.array);
    for (unsigned i = 0; i < sqEntries_; i++) array[i] = i;

    eventFd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (eventFd_ < 0) {
      eventFd_ = -1;
      ThrowSys(env, errno, "eventfd");
      return;
    }
    if (SysRegister(ringFd_, IORING_REGISTER_EVENTFD, &eventFd_, 1) < 0) {
      ThrowSys(env, errno, "io_uring_register");
      return;
    }
    buffers_.resize(kMaxBuffers);
    scratch_.reserve(sqEntries_);
  }

  ~IoUring() override { Shutdown(); }

 private:
  bool Closed(Napi::Env env, const char* fn) {
    if (ringFd_ >= 0) return false;
    ThrowSys(env, EBADF, fn, "io_uring is closed");
    return true;
  }

  Napi::Value GetEntries(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), sqEntries_); }
  Napi::Value GetEventFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), eventFd_); }
  Napi::Value GetInflight(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(inflight_));
  }

  void ReleaseRef(napi_ref ref) {
    if (ref == nullptr) return;
    // The kernel may still be reading or writing the old buffer: keep it
    // alive until no request is in flight.
    if (inflight_ > 0)
      retired_.push_back(ref);
    else
      napi_delete_reference(env_, ref);
  }

  void ReleaseRetired() {
    for (napi_ref r : retired_) napi_delete_reference(env_, r);
    retired_.clear();
  }

  // setBuffer(index, ArrayBuffer | ArrayBufferView | null)
  Napi::Value SetBuffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double idx;
    if (Closed(env, "io_uring_setbuffer") || !ArgInt(info, 0, "io_uring_setbuffer", "index", 0, kMaxBuffers - 1, &idx))
      return env.Undefined();
    BufSlot& slot = buffers_[static_cast<size_t>(idx)];
    if (info.Length() < 2 || info[1].IsNull() || info[1].IsUndefined()) {
      ReleaseRef(slot.ref);
      slot = BufSlot();
      return env.Undefined();
    }
    napi_value v = info[1];
    napi_value ab = nullptr;
    bool whole = true;
    size_t winOff = 0, winLen = 0;
    bool is = false;
    if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
      ab = v;
    } else if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
      napi_typedarray_type type;
      size_t length;
      if (napi_get_typedarray_info(env, v, &type, &length, nullptr, &ab, &winOff) != napi_ok)
        return ThrowArg(env, "io_uring_setbuffer", "bad typed array");
      if (type != napi_uint8_array && type != napi_int8_array && type != napi_uint8_clamped_array)
        return ThrowArg(env, "io_uring_setbuffer", "typed array must have 1-byte elements");
      whole = false;
      winLen = length;
    } else if (napi_is_dataview(env, v, &is) == napi_ok && is) {
      if (napi_get_dataview_info(env, v, &winLen, nullptr, &ab, &winOff) != napi_ok)
        return ThrowArg(env, "io_uring_setbuffer", "bad DataView");
      whole = false;
    }
    // SharedArrayBuffers (and anything else) are refused.
    if (ab == nullptr || napi_is_arraybuffer(env, ab, &is) != napi_ok || !is)
      return ThrowArg(env, "io_uring_setbuffer", "buffer must be an ArrayBuffer, a byte view of one, or null");
    napi_ref ref;
    if (napi_create_reference(env, ab, 1, &ref) != napi_ok) return ThrowArg(env, "io_uring_setbuffer", "no reference");
    ReleaseRef(slot.ref);
    slot = BufSlot();
    slot.ref = ref;
    slot.whole = whole;
    slot.winOff = winOff;
    slot.winLen = winLen;
    return env.Undefined();
  }

  // Current base/size of buffer `idx`, cached for the duration of one submit.
  bool Resolve(unsigned idx, uint8_t** base, size_t* size) {
    BufSlot& s = buffers_[idx];
    if (s.ref == nullptr) return false;
    if (s.stamp != stamp_) {
      s.stamp = stamp_;
      s.base = nullptr;
      s.size = 0;
      napi_value ab;
      void* data = nullptr;
      size_t len = 0;
      if (napi_get_reference_value(env_, s.ref, &ab) == napi_ok && ab != nullptr &&
          napi_get_arraybuffer_info(env_, ab, &data, &len) == napi_ok && data != nullptr) {
        if (s.whole) {
          s.base = static_cast<uint8_t*>(data);
          s.size = len;
        } else if (s.winOff <= len && s.winLen <= len - s.winOff) {
          s.base = static_cast<uint8_t*>(data) + s.winOff;
          s.size = s.winLen;
        }  // else: the buffer shrank or was detached: size 0
      }
    }
    *base = s.base;
    *size = s.size;
    return true;
  }

  // Throws EINVAL naming op `op` of a batch given to `fn`.
  Napi::Value BadOp(Napi::Env env, const char* fn, size_t op, const char* what) {
    std::string msg = "op " + std::to_string(op) + ": " + what;
    return ThrowSys(env, EINVAL, fn, msg.c_str());
  }

  // Checks triple `t`; on success stores the iovec it denotes.
  bool CheckIov(const double* iovs, size_t t, iovec* out) {
    const double* x = iovs + t * kIovStride;
    if (!IsIntIn(x[0], 0, kMaxBuffers - 1) || !IsIntIn(x[1], 0, kMaxSafe) || !IsIntIn(x[2], 0, kMaxSafe)) return false;
    uint8_t* base;
    size_t size;
    if (!Resolve(static_cast<unsigned>(x[0]), &base, &size)) return false;
    size_t off = static_cast<size_t>(x[1]);
    size_t len = static_cast<size_t>(x[2]);
    if (off > size || len > size - off) return false;
    out->iov_base = len == 0 ? base : base + off;
    out->iov_len = len;
    return true;
  }

  bool Bad(Napi::Env env, const char* fn, size_t op, const char* what) {
    BadOp(env, fn, op, what);
    return false;
  }

  // What is wrong with record `r` (its fields and iovec range, not the triples' buffers), or
  // nullptr when it is fine.
  static const char* RecordProblem(const double* r, size_t numTriples) {
    if (!IsIntIn(r[0], kReadv, kWrite)) return "unknown opcode";
    if (!IsIntIn(r[1], 0, INT32_MAX)) return "fd must be an integer >= 0";
    if (!IsIntIn(r[2], 0, kMaxSafe)) return "file offset must be an integer in [0, 2^53)";
    if (!IsIntIn(r[3], 0, static_cast<double>(kInternalTag - 1))) return "userData must be an integer in [0, 2^40)";
    const int op = static_cast<int>(r[0]);
    if (op == kReadv || op == kWritev || op == kRead || op == kWrite) {
      const double maxIov = (op == kRead || op == kWrite) ? 1 : kMaxIovPerOp;
      if (!IsIntIn(r[5], 1, maxIov)) return "bad iovCount";
      if (!IsIntIn(r[4], 0, kMaxSafe) || r[4] + r[5] > static_cast<double>(numTriples)) return "iovec range outside the iovs array";
      // arg = SQE flags; only IOSQE_ASYNC (the others change linking, fixed files or
      // buffer selection, which this wrapper does not set up).
      if (!IsIntIn(r[6], 0, 0xff) || (static_cast<unsigned>(r[6]) & ~static_cast<unsigned>(IOSQE_ASYNC)) != 0)
        return "read/write flags: only IOSQE_ASYNC";
    } else if (op == kFallocate) {
      if (!IsIntIn(r[6], 0, 0xff)) return "bad fallocate mode";
      if (!IsIntIn(r[7], 1, kMaxSafe) || r[2] + r[7] > kMaxSafe) return "bad fallocate length";
    }
    return nullptr;
  }
  static bool RecordOk(const double* r, size_t numTriples) { return RecordProblem(r, numTriples) == nullptr; }

  // Checks `count` records and every iovec triple they name; throws (BadOp) and returns false on
  // the first bad one. Adds the READV/WRITEV iovec count to *totalIovs.
  bool Validate(Napi::Env env, const char* fn, const double* ops, size_t count, const double* iovs, size_t numTriples, size_t* totalIovs) {
    for (size_t i = 0; i < count; i++) {
      const double* r = ops + i * kOpStride;
      const char* problem = RecordProblem(r, numTriples);
      if (problem != nullptr) return Bad(env, fn, i, problem);
      const int op = static_cast<int>(r[0]);
      if (op == kReadv || op == kWritev || op == kRead || op == kWrite) {
        const size_t start = static_cast<size_t>(r[4]);
        const size_t n = static_cast<size_t>(r[5]);
        iovec v;
        for (size_t k = 0; k < n; k++) {
          if (!CheckIov(iovs, start + k, &v))
            return Bad(env, fn, i, "bad iovec triple (unknown buffer, or range outside the buffer's current length)");
          if ((op == kRead || op == kWrite) && v.iov_len > UINT32_MAX) return Bad(env, fn, i, "length over 2^32 - 1");
        }
        if (op == kReadv || op == kWritev) *totalIovs += n;
      }
    }
    return true;
  }

  // A batch argument triple (ops, count, iovs) of submit / runInline, validated whole.
  struct Batch {
    const double* ops = nullptr;
    const double* iovs = nullptr;
    size_t count = 0;
    size_t numTriples = 0;
    size_t totalIovs = 0;  // READV/WRITEV iovecs in the batch
  };

  // Reads and validates info[0..2] for `fn` into *b; throws and returns false when they are bad
  // (or the ring is closed). Starts a new buffer-resolution stamp.
  bool TakeBatch(const Napi::CallbackInfo& info, const char* fn, Batch* b) {
    Napi::Env env = info.Env();
    if (Closed(env, fn)) return false;
    double* ops;
    size_t opsLen;
    double* iovs;
    size_t iovsLen;
    if (info.Length() < 3 || !Float64View(env, info[0], &ops, &opsLen) || !Float64View(env, info[2], &iovs, &iovsLen)) {
      ThrowArg(env, fn, "ops and iovs must be Float64Arrays");
      return false;
    }
    double countD;
    if (!ArgInt(info, 1, fn, "count", 0, static_cast<double>(opsLen / kOpStride), &countD)) return false;
    b->ops = ops;
    b->iovs = iovs;
    b->count = static_cast<size_t>(countD);
    b->numTriples = iovsLen / kIovStride;
    stamp_++;
    return Validate(env, fn, ops, b->count, iovs, b->numTriples, &b->totalIovs);
  }

  // runInline(ops: Float64Array, count, iovs: Float64Array, out: Float64Array) -> ops run
  //
  // Runs the records on the calling thread with the plain syscalls (pread/pwrite/preadv/pwritev,
  // fsync/fdatasync, fallocate) instead of the ring, and stores [userData, res] pairs in `out`
  // as reap() would (res = bytes or 0, or -errno). Same records, same validation, same buffer
  // table. For files whose reads and writes never wait for a device but which io_uring cannot
  // run without blocking (tmpfs): the ring punts every such op to an io-wq thread.
  Napi::Value RunInline(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Batch b;
    if (!TakeBatch(info, "io_uring_run_inline", &b)) return env.Undefined();
    double* out;
    size_t outLen;
    if (info.Length() < 4 || !Float64View(env, info[3], &out, &outLen) || outLen / 2 < b.count)
      return ThrowArg(env, "io_uring_run_inline", "out must be a Float64Array holding two numbers per op");
    const double* ops = b.ops;
    const double* iovs = b.iovs;
    const size_t count = b.count;
    const size_t numTriples = b.numTriples;
    if (scratch_.size() < kMaxIovPerOp) scratch_.resize(static_cast<size_t>(kMaxIovPerOp));
    for (size_t i = 0; i < count; i++) {
      // Unlike submit, ops run one after the other and write memory between them (`out`, and
      // the data a read brings in), which the caller may have made overlap `ops` or `iovs`:
      // each record is copied and checked again right before it runs, and its iovecs are
      // built from checked triples; one that changed since the batch check fails alone.
      double r[kOpStride];
      std::memcpy(r, ops + i * kOpStride, sizeof r);
      const int op = static_cast<int>(r[0]);
      const int fd = static_cast<int>(r[1]);
      const off_t off = static_cast<off_t>(r[2]);
      long res = 0;
      int cnt = 0;
      if (!RecordOk(r, numTriples)) {
        errno = EINVAL;
        res = -1;
      } else if (op == kRead || op == kWrite || op == kReadv || op == kWritev) {
        const size_t start = static_cast<size_t>(r[4]);
        cnt = static_cast<int>(r[5]);
        for (int k = 0; k < cnt && res != -1; k++) {
          if (!CheckIov(iovs, start + static_cast<size_t>(k), &scratch_[static_cast<size_t>(k)])) {
            errno = EINVAL;
            res = -1;
          }
        }
      }
      if (res != -1) do {
        switch (op) {
          case kRead:
          case kWrite: {
            const iovec& v = scratch_[0];
            res = op == kRead ? ::pread(fd, v.iov_base, v.iov_len, off) : ::pwrite(fd, v.iov_base, v.iov_len, off);
            break;
          }
          case kReadv:
          case kWritev:
            res = op == kReadv ? ::preadv(fd, scratch_.data(), cnt, off) : ::pwritev(fd, scratch_.data(), cnt, off);
            break;
          case kFsync:
            res = ::fsync(fd);
            break;
          case kFdatasync:
            res = ::fdatasync(fd);
            break;
          default:  // kFallocate (validated)
            res = ::fallocate(fd, static_cast<int>(r[6]), off, static_cast<off_t>(r[7]));
            break;
        }
      } while (res < 0 && errno == EINTR);
      out[2 * i] = r[3];
      out[2 * i + 1] = res < 0 ? -static_cast<double>(errno) : static_cast<double>(res);
    }
    return Napi::Number::New(env, static_cast<double>(count));
  }

  // submit(ops: Float64Array, count, iovs: Float64Array) -> ops submitted
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // Pass 1: validate the whole batch before anything reaches the ring.
    Batch b;
    if (!TakeBatch(info, "io_uring_submit", &b)) return env.Undefined();
    const double* ops = b.ops;
    const double* iovs = b.iovs;
    const size_t count = b.count;
    const size_t totalIovs = b.totalIovs;
    if (count == 0) return Napi::Number::New(env, 0);

    // Pass 2: fill what fits in the SQ.
    const unsigned head = LoadAcquire(sqHead_);
    const unsigned tail = *sqTail_;  // only we write it
    const unsigned space = sqEntries_ - (tail - head);
    const unsigned n = count < space ? static_cast<unsigned>(count) : space;
    if (n == 0) return Napi::Number::New(env, 0);
    if (scratch_.size() < totalIovs) scratch_.resize(totalIovs);
    size_t iovNext = 0;
    for (unsigned i = 0; i < n; i++) {
      const double* r = ops + static_cast<size_t>(i) * kOpStride;
      io_uring_sqe* sqe = &sqes_[(tail + i) & sqMask_];
      std::memset(sqe, 0, sizeof *sqe);
      const int op = static_cast<int>(r[0]);
      sqe->fd = static_cast<int>(r[1]);
      sqe->off = static_cast<uint64_t>(r[2]);
      sqe->user_data = static_cast<uint64_t>(r[3]);
      switch (op) {
        case kReadv:
        case kWritev: {
          size_t start = static_cast<size_t>(r[4]);
          size_t cnt = static_cast<size_t>(r[5]);
          iovec* dst = &scratch_[iovNext];
          for (size_t k = 0; k < cnt; k++) CheckIov(iovs, start + k, &dst[k]);  // validated above
          iovNext += cnt;
          sqe->opcode = op == kReadv ? IORING_OP_READV : IORING_OP_WRITEV;
          sqe->flags = static_cast<uint8_t>(r[6]);
          sqe->addr = reinterpret_cast<uintptr_t>(dst);
          sqe->len = static_cast<uint32_t>(cnt);
          break;
        }
        case kRead:
        case kWrite: {
          iovec v;
          CheckIov(iovs, static_cast<size_t>(r[4]), &v);
          sqe->opcode = op == kRead ? IORING_OP_READ : IORING_OP_WRITE;
          sqe->flags = static_cast<uint8_t>(r[6]);
          sqe->addr = reinterpret_cast<uintptr_t>(v.iov_base);
          sqe->len = static_cast<uint32_t>(v.iov_len);
          break;
        }
        case kFsync:
        case kFdatasync:
          sqe->opcode = IORING_OP_FSYNC;
          sqe->off = 0;  // whole file
          sqe->fsync_flags = op == kFdatasync ? IORING_FSYNC_DATASYNC : 0;
          break;
        case kFallocate:
          sqe->opcode = IORING_OP_FALLOCATE;
          sqe->len = static_cast<uint32_t>(r[6]);    // mode
          sqe->addr = static_cast<uint64_t>(r[7]);   // length
          break;
      }
    }
    StoreRelease(sqTail_, tail + n);
    int r;
    do r = SysEnter(ringFd_, n, 0, 0); while (r < 0 && errno == EINTR);
    int err = r < 0 ? errno : 0;
    // The SQ head tells what the kernel consumed. Without SQPOLL the kernel
    // reads our tail only inside io_uring_enter, so SQEs it left behind can be
    // withdrawn by moving the tail back: their iovecs live in scratch_, which
    // the next submit overwrites, so they must never be consumed later.
    const unsigned consumed = LoadAcquire(sqHead_) - head;
    if (consumed < n) StoreRelease(sqTail_, tail + consumed);
    inflight_ += consumed;
    if (consumed == 0 && err != 0 && err != EAGAIN && err != EBUSY) return ThrowSys(env, err, "io_uring_enter");
    return Napi::Number::New(env, consumed);
  }

  // completionsReady() -> whether a reap would find a completion (no syscall, consumes none)
  Napi::Value CompletionsReady(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (ringFd_ < 0) return Napi::Boolean::New(env, false);
    const bool ready = *cqHead_ != LoadAcquire(cqTail_) || (LoadAcquire(sqFlags_) & IORING_SQ_CQ_OVERFLOW) != 0;
    return Napi::Boolean::New(env, ready);
  }

  // reap(out: Float64Array) -> completions copied as [userData, res] pairs
  Napi::Value Reap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed(env, "io_uring_reap")) return env.Undefined();
    double* out;
    size_t outLen;
    if (info.Length() < 1 || !Float64View(env, info[0], &out, &outLen) || outLen < 2)
      return ThrowArg(env, "io_uring_reap", "out must be a Float64Array of length >= 2");
    const size_t max = outLen / 2;
    size_t got = 0;
    bool flushed = false;
    for (;;) {
      unsigned head = *cqHead_;  // only we write it
      const unsigned tail = LoadAcquire(cqTail_);
      const size_t before = got;
      while (head != tail && got < max) {
        const io_uring_cqe* c = &cqes_[head & cqMask_];
        out[2 * got] = static_cast<double>(c->user_data);
        out[2 * got + 1] = c->res;
        got++;
        head++;
      }
      StoreRelease(cqHead_, head);
      // With IORING_FEAT_NODROP, completions that found the CQ full wait in
      // a kernel backlog; entering with GETEVENTS moves as many as fit into
      // the ring. Repeat while there is room in `out` and progress is made.
      if (got == max || (LoadAcquire(sqFlags_) & IORING_SQ_CQ_OVERFLOW) == 0) break;
      if (flushed && got == before) break;  // the last flush moved nothing: do not spin
      flushed = true;
      int r;
      do r = SysEnter(ringFd_, 0, 0, IORING_ENTER_GETEVENTS); while (r < 0 && errno == EINTR);
      if (r < 0) break;
    }
    inflight_ = got < inflight_ ? inflight_ - got : 0;
    if (inflight_ == 0 && !retired_.empty()) ReleaseRetired();
    return Napi::Number::New(env, static_cast<double>(got));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  // Waits (bounded) for in-flight requests so the kernel stops touching the
  // buffers before their references are dropped.
  void Drain() {
    if (inflight_ == 0 || ring_ == nullptr || sqes_ == nullptr) return;
    // Ask the kernel to cancel whatever it can (IORING_ASYNC_CANCEL_ANY).
    unsigned tail = *sqTail_;
    if (sqEntries_ - (tail - LoadAcquire(sqHead_)) > 0) {
      io_uring_sqe* sqe = &sqes_[tail & sqMask_];
      std::memset(sqe, 0, sizeof *sqe);
      sqe->opcode = IORING_OP_ASYNC_CANCEL;
      sqe->fd = -1;
      sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY;
      sqe->user_data = kInternalTag;
      StoreRelease(sqTail_, tail + 1);
      SysEnter(ringFd_, 1, 0, 0);
      StoreRelease(sqTail_, LoadAcquire(sqHead_));
    }
    timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (inflight_ > 0) {
      unsigned head = *cqHead_;
      const unsigned tail2 = LoadAcquire(cqTail_);
      for (; head != tail2; head++)
        if (cqes_[head & cqMask_].user_data != kInternalTag && inflight_ > 0) inflight_--;
      StoreRelease(cqHead_, head);
      if (inflight_ == 0) break;
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec - start.tv_sec >= 2) break;  // give up: the buffers are leaked below
      __kernel_timespec ts{0, 50 * 1000 * 1000};
      io_uring_getevents_arg arg{};
      arg.ts = reinterpret_cast<uintptr_t>(&ts);
      if (SysEnter(ringFd_, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg) < 0 &&
          errno == EINVAL) {
        timespec nap{0, 1000 * 1000};  // kernel < 5.11 has no EXT_ARG timeout: poll instead of spinning
        nanosleep(&nap, nullptr);
      }
    }
  }

  void Shutdown() {
    if (ringFd_ >= 0) Drain();
    bool stillBusy = inflight_ > 0;
    if (sqes_ != nullptr) ::munmap(sqes_, sqesSize_);
    if (ring_ != nullptr) ::munmap(ring_, ringSize_);
    sqes_ = nullptr;
    ring_ = nullptr;
    if (ringFd_ >= 0) ::close(ringFd_);
    if (eventFd_ >= 0) ::close(eventFd_);
    ringFd_ = -1;
    eventFd_ = -1;
    // If requests could not be drained the kernel may still write into the
    // buffers: leak the references (memory stays valid) rather than risk a
    // use-after-free.
    if (!stillBusy) {
      for (BufSlot& s : buffers_)
        if (s.ref != nullptr) napi_delete_reference(env_, s.ref);
      ReleaseRetired();
    }
    buffers_.clear();
    retired_.clear();
    inflight_ = 0;
  }

  napi_env env_ = nullptr;
  int ringFd_ = -1;
  int eventFd_ = -1;
  uint8_t* ring_ = nullptr;
  size_t ringSize_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqesSize_ = 0;
  unsigned* sqHead_ = nullptr;
  unsigned* sqTail_ = nullptr;
  unsigned* sqFlags_ = nullptr;
  unsigned sqMask_ = 0;
  unsigned sqEntries_ = 0;
  unsigned* cqHead_ = nullptr;
  unsigned* cqTail_ = nullptr;
  unsigned cqMask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  uint64_t inflight_ = 0;
  uint64_t stamp_ = 0;
  std::vector<BufSlot> buffers_;
  std::vector<napi_ref> retired_;
  std::vector<iovec> scratch_;
};

void InitIoUring(Napi::Env env, Napi::Object exports) {
  exports.Set("IoUring", IoUring::Define(env));
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("READV", Napi::Number::New(env, kReadv));
  ops.Set("WRITEV", Napi::Number::New(env, kWritev));
  ops.Set("FSYNC", Napi::Number::New(env, kFsync));
  ops.Set("FDATASYNC", Napi::Number::New(env, kFdatasync));
  ops.Set("FALLOCATE", Napi::Number::New(env, kFallocate));
  ops.Set("READ", Napi::Number::New(env, kRead));
  ops.Set("WRITE", Napi::Number::New(env, kWrite));
  exports.Set("ioringOps", ops);
  exports.Set("IOSQE_ASYNC", Napi::Number::New(env, IOSQE_ASYNC));
  Napi::Object sizes = Napi::Object::New(env);
  sizes.Set("io_uring_sqe", Napi::Number::New(env, sizeof(io_uring_sqe)));
  sizes.Set("io_uring_cqe", Napi::Number::New(env, sizeof(io_uring_cqe)));
  sizes.Set("iovec", Napi::Number::New(env, sizeof(iovec)));
  sizes.Set("opStride", Napi::Number::New(env, kOpStride));
  sizes.Set("iovStride", Napi::Number::New(env, kIovStride));
  sizes.Set("maxBuffers", Napi::Number::New(env, kMaxBuffers));
  exports.Set("ioUringLayout", sizes);
  Napi::Object fl = Napi::Object::New(env);
  fl.Set("FALLOC_FL_KEEP_SIZE", Napi::Number::New(env, FALLOC_FL_KEEP_SIZE));
  fl.Set("FALLOC_FL_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE));
  fl.Set("FALLOC_FL_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE));
  exports.Set("fallocConstants", fl);
}

}  // namespace vts
