// memfd, ftruncate, mmap/munmap.
//
// mmap() returns an *external* ArrayBuffer over the mapping. munmap() first
// detaches that ArrayBuffer (every view then reads as length 0, so later
// access is harmless instead of a segfault) and only then unmaps. A mapping
// the program never unmaps is unmapped by the ArrayBuffer's finalizer.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "sys.h"

namespace vts {

namespace {

std::mutex gMapLock;
// Bytes V8 took off its external-memory count for unmapped buffers that Mmap
// had already taken off (see Mmap).
std::atomic<int64_t> gExternalOwed{0};
std::unordered_map<void*, Mapping*> gMappings;  // live mappings by address

void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> lock(gMapLock);
    if (m->mapped) {
      gMappings.erase(m->addr);
      m->mapped = false;
      UnregisterFaultRange(m->faultSlot);
      ::munmap(m->addr, m->length);
    }
  }
  gExternalOwed += static_cast<int64_t>(m->length);
  delete m;
}

}  // namespace

int FaultSlotOf(void* addr) {
  std::lock_guard<std::mutex> lock(gMapLock);
  auto it = addr != nullptr ? gMappings.find(addr) : gMappings.end();
  return it == gMappings.end() || !it->second->mapped ? -1 : it->second->faultSlot;
}

namespace {

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name;
  if (!ArgString(info, 0, "memfd_create", "name", &name)) return info.Env().Undefined();
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ThrowSys(info.Env(), errno, "memfd_create");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int fd;
  double size;
  if (!ArgFd(info, 0, "ftruncate", &fd) || !ArgInt(info, 1, "ftruncate", "size", 0, kMaxSafe, &size))
    return info.Env().Undefined();
  int r;
  do r = ::ftruncate(fd, static_cast<off_t>(size)); while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowSys(info.Env(), errno, "ftruncate");
  return info.Env().Undefined();
}

// mmap(fd, length, offset, writable)
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  double length, offset;
  bool writable;
  if (!ArgFd(info, 0, "mmap", &fd) || !ArgInt(info, 1, "mmap", "length", 1, kMaxSafe, &length) ||
      !ArgInt(info, 2, "mmap", "offset", 0, kMaxSafe, &offset) ||
      !ArgBool(info, 3, "mmap", "writable", true, &writable))
    return env.Undefined();
  // Touching a page past the end of a file raises SIGBUS: refuse mappings
  // that reach beyond a regular file (memfds are regular files). A frontend
  // that shrinks the file afterwards is caught by the SIGBUS guard
  // (mapping-faults.cc): the page reads as zeros and the fault is counted.
  struct stat st;
  if (::fstat(fd, &st) < 0) return ThrowSys(env, errno, "mmap");
  if (S_ISREG(st.st_mode) && offset + length > static_cast<double>(st.st_size))
    return ThrowSys(env, EINVAL, "mmap", "range extends past the end of the file");
  // A read-only request is mapped MAP_PRIVATE but writable: an ArrayBuffer
  // cannot be made read-only, and a JS store into a PROT_READ page would
  // crash the process. Private pages still show the file's contents (until
  // written locally) and local writes never reach the file.
  int prot = PROT_READ | PROT_WRITE;
  int flags = writable ? MAP_SHARED : MAP_PRIVATE;
  void* addr = ::mmap(nullptr, static_cast<size_t>(length), prot, flags, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) return ThrowSys(env, errno, "mmap");
  Mapping* m = new Mapping{addr, static_cast<size_t>(length), true, -1};
  {
    std::lock_guard<std::mutex> lock(gMapLock);
    m->faultSlot = RegisterFaultRange(addr, m->length);
    gMappings[addr] = m;
  }
  // V8 counts an external ArrayBuffer's length as external memory and collects
  // garbage when that grows fast: mapping a large guest (1 GiB pieces) ran a
  // full GC per piece, 5-9 ms each — a 1 TiB region blocked the event loop for
  // ~10 s. A mapping is not memory a GC can give back: take it off the count.
  // V8 takes it off once more when the buffer is detached or collected (at a
  // time we do not know: adding it back at munmap looked like growth, a full
  // GC per unmapped piece). That second removal is owed back, and repaid
  // here, at the next mapping: a count left low would keep other external
  // memory (frame buffers of finished sessions) from ever triggering a GC —
  // RSS grew 170 → 390 MiB over 1000 net sessions. (Taken off before the
  // ArrayBuffer is made: V8 checks its GC limit as it adds the length.)
  const int64_t owed = gExternalOwed.exchange(0);
  int64_t ignored;
  napi_adjust_external_memory(env, owed - static_cast<int64_t>(m->length), &ignored);
  napi_value ab;
  napi_status status = napi_create_external_arraybuffer(env, addr, m->length, FinalizeMapping, m, &ab);
  if (status != napi_ok) {
    // Typically a length above what this Node can put in one ArrayBuffer.
    // Node may or may not have run the finalizer already (it does so
    // synchronously on some failure paths), so unmap only if it did not and
    // leave the small record to the finalizer rather than risk a double free.
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
    napi_adjust_external_memory(env, static_cast<int64_t>(m->length), &ignored);  // V8 never counted it
    std::lock_guard<std::mutex> lock(gMapLock);
    auto it = gMappings.find(addr);
    if (it != gMappings.end() && it->second == m && m->mapped) {
      gMappings.erase(it);
      m->mapped = false;
      UnregisterFaultRange(m->faultSlot);
      ::munmap(addr, m->length);
    }
    return ThrowSys(env, EINVAL, "mmap", "cannot wrap the mapping in an ArrayBuffer (too large for this Node?)");
  }
  return Napi::Value(env, ab);
}

// munmap(arrayBuffer): only buffers returned by mmap() and not yet unmapped.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) return ThrowArg(env, "munmap", "buffer must be an ArrayBuffer");
  napi_value ab = info[0];
  void* data = nullptr;
  size_t len = 0;
  if (napi_get_arraybuffer_info(env, ab, &data, &len) != napi_ok) return ThrowArg(env, "munmap", "bad ArrayBuffer");
  Mapping* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(gMapLock);
    auto it = data != nullptr ? gMappings.find(data) : gMappings.end();
    if (it != gMappings.end() && it->second->length == len) m = it->second;
  }
  if (m == nullptr) return ThrowSys(env, EINVAL, "munmap", "buffer is not a live mapping made by mmap()");
  // Detach before unmapping: once detached no JS view can reach the address.
  if (napi_detach_arraybuffer(env, ab) != napi_ok) {
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
    return ThrowSys(env, EINVAL, "munmap", "buffer cannot be detached");
  }
  std::lock_guard<std::mutex> lock(gMapLock);
  if (m->mapped) {
    gMappings.erase(m->addr);
    m->mapped = false;
    UnregisterFaultRange(m->faultSlot);
    if (::munmap(m->addr, m->length) < 0) return ThrowSys(env, errno, "munmap");
  }
  return env.Undefined();
}

// copyRanges(dst: ArrayBufferView, src: ArrayBufferView, plan: Float64Array, count)
//
// Copies `count` byte ranges from src to dst in one call; plan holds
// [srcOffset, dstOffset, length] triples, offsets relative to each view.
// Not a syscall but the same rule as io_uring submits: a data path that moves
// a burst of frames pays one native call per burst, not one JS `set()` (with
// its subarray allocation) per frame. Every range is checked against both
// views before anything is copied, so a bad plan copies nothing; memmove
// because dst and src may be views of one buffer.
/**
 * Starts fetching the line at `p` in a state we can write (PREFETCHW): the store that follows
 * then needs no second round trip to take the line from the CPU that shared it. CPUs without
 * the instruction treat its encoding as a no-op.
 */
inline void PrefetchForWrite(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

Napi::Value CopyRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* dst;
  uint8_t* src;
  size_t dstLen, srcLen;
  if (!ArgBytes(info, 0, "copyRanges", "dst", &dst, &dstLen) || !ArgBytes(info, 1, "copyRanges", "src", &src, &srcLen))
    return env.Undefined();
  double* planPtr = nullptr;
  size_t planLen = 0;
  if (info.Length() < 3 || !Float64View(env, info[2], &planPtr, &planLen))
    return ThrowArg(env, "copyRanges", "plan must be a Float64Array");
  double count;
  if (!ArgInt(info, 3, "copyRanges", "count", 0, static_cast<double>(planLen / 3), &count)) return env.Undefined();
  const double* plan = planPtr;
  const size_t n = static_cast<size_t>(count);
  bool prefetchDst = false;
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    if (!info[4].IsBoolean()) return ThrowArg(env, "copyRanges", "prefetchDst must be a boolean");
    prefetchDst = info[4].As<Napi::Boolean>().Value();
  }
  const double dl = static_cast<double>(dstLen), sl = static_cast<double>(srcLen);
  // The checked values are kept and used: a plan over a SharedArrayBuffer can
  // be rewritten by another thread between the check and the copy.
  thread_local std::vector<size_t> checked;
  checked.resize(3 * n);
  for (size_t i = 0; i < n; i++) {
    const double so = plan[3 * i], d = plan[3 * i + 1], len = plan[3 * i + 2];
    // `!(a <= b)` also rejects NaN.
    if (!(so >= 0 && d >= 0 && len >= 0) || !(so + len <= sl) || !(d + len <= dl) ||
        !IsIntIn(so, 0, kMaxSafe) || !IsIntIn(d, 0, kMaxSafe) || !IsIntIn(len, 0, kMaxSafe))
      return ThrowSys(env, EINVAL, "copyRanges", "a range lies outside its buffer");
    checked[3 * i] = static_cast<size_t>(so);
    checked[3 * i + 1] = static_cast<size_t>(d);
    checked[3 * i + 2] = static_cast<size_t>(len);
    // Sources written by another CPU (a guest's TX frames) miss: start every range's first
    // and last line now so the misses overlap; the memmoves below then mostly hit.
    if (len != 0) {
      const uint8_t* s = src + static_cast<size_t>(so);
      __builtin_prefetch(s);
      __builtin_prefetch(s + static_cast<size_t>(len) - 1);
    }
  }
  for (size_t i = 0; i < n; i++) {
    // Destinations another CPU last touched (a guest's RX buffers) miss on every line: ask for
    // the next range's lines, for writing, while this one is copied, so their misses overlap
    // with this copy (asking for all of them up front overflows the CPU's miss buffers).
    if (prefetchDst && i + 1 < n) {
      // Every line the range touches, from the one holding its first byte (a range may start
      // mid-line: an RX payload starts 12 bytes into its buffer).
      const uintptr_t first = reinterpret_cast<uintptr_t>(dst + checked[3 * (i + 1) + 1]);
      const uintptr_t end = first + checked[3 * (i + 1) + 2];
      for (uintptr_t a = first & ~static_cast<uintptr_t>(63); a < end; a += 64) PrefetchForWrite(reinterpret_cast<const void*>(a));
    }
    const size_t len = checked[3 * i + 2];
    if (len != 0) std::memmove(dst + checked[3 * i + 1], src + checked[3 * i], len);
  }
  return env.Undefined();
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("copyRanges", Napi::Function::New(env, CopyRanges, "copyRanges"));
}

}  // namespace vts
