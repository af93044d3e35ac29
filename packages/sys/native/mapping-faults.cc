// SIGBUS guard for mappings made by mmap().
//
// Guest memory is a file the frontend owns. If the frontend shrinks it after
// the mapping was made (ftruncate on its memfd), touching a page past the new
// end raises SIGBUS, and without a handler that ends the whole process: every
// other connection and device with it. A frontend is not trusted, so:
//
//  - every live mapping is listed in a fixed table the signal handler can read
//    without locks;
//  - on SIGBUS with BUS_ADRERR inside a listed mapping, the handler maps a
//    private zero page over the faulting page (MAP_FIXED) and returns: the
//    access is retried and succeeds, reading zeros / writing to a page no one
//    else sees;
//  - it counts the fault on that mapping and signals an eventfd, so the event
//    loop learns about it (mappingFaults(buffer), mappingFaultFd()) and can end
//    the session whose memory it was;
//  - any other SIGBUS goes to the previous disposition (default: the process
//    ends, as before).
//
// Kernel accesses (io_uring reads and writes into such a page) fail with
// EFAULT instead; no signal is involved.
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "sys.h"

namespace vts {

namespace {

constexpr size_t kSlots = 8192;

struct FaultRange {
  std::atomic<uintptr_t> start{0};  // 0: free slot
  std::atomic<uintptr_t> end{0};
  std::atomic<uint32_t> faults{0};
};

FaultRange gRanges[kSlots];
std::mutex gSlotLock;  // registrars only; the handler never locks
struct sigaction gOldBus;
int gFaultFd = -1;
std::once_flag gInstalled;

// Replaces the page holding `a` (4 KiB, else a 2 MiB or 1 GiB huge page when the
// mapping is hugetlbfs) with private zeros, staying inside [start, end).
bool ReplaceWithZeros(uintptr_t a, uintptr_t start, uintptr_t end) {
  static const uintptr_t kSizes[] = {uintptr_t{4096}, uintptr_t{2} << 20, uintptr_t{1} << 30};
  for (uintptr_t size : kSizes) {
    uintptr_t p = a & ~(size - 1);
    if (p < start || p + size > end) continue;
    void* r = ::mmap(reinterpret_cast<void*>(p), size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (r != MAP_FAILED) return true;
  }
  return false;
}

void OnSigbus(int sig, siginfo_t* si, void* uc) {
  const int saved = errno;
  if (si != nullptr && si->si_code == BUS_ADRERR) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
    for (size_t i = 0; i < kSlots; i++) {
      const uintptr_t s = gRanges[i].start.load(std::memory_order_acquire);
      if (s == 0 || a < s) continue;
      const uintptr_t e = gRanges[i].end.load(std::memory_order_relaxed);
      if (a >= e) continue;
      if (ReplaceWithZeros(a, s, e)) {
        gRanges[i].faults.fetch_add(1, std::memory_order_relaxed);
        uint64_t one = 1;
        ssize_t w = ::write(gFaultFd, &one, sizeof one);
        (void)w;
        errno = saved;
        return;
      }
      break;
    }
  }
  errno = saved;
  // Not ours: what would have happened without this handler.
  if ((gOldBus.sa_flags & SA_SIGINFO) != 0 && gOldBus.sa_sigaction != nullptr) {
    gOldBus.sa_sigaction(sig, si, uc);
    return;
  }
  if ((gOldBus.sa_flags & SA_SIGINFO) == 0 && gOldBus.sa_handler != SIG_DFL && gOldBus.sa_handler != SIG_IGN) {
    gOldBus.sa_handler(sig);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);
  // A fault repeats on return and now ends the process; a sent signal is raised again.
  if (si == nullptr || si->si_code <= 0) ::raise(SIGBUS);
}

void Install() {
  gFaultFd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, &gOldBus) != 0) std::memset(&gOldBus, 0, sizeof gOldBus);
}

Napi::Value MappingFaultFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), gFaultFd); }

// mappingFaults(buffer): faults caught in the mapping behind `buffer` (0 if it is none).
Napi::Value MappingFaults(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) return ThrowArg(env, "mapping_faults", "buffer must be an ArrayBuffer");
  void* data = nullptr;
  size_t len = 0;
  if (napi_get_arraybuffer_info(env, info[0], &data, &len) != napi_ok) return ThrowArg(env, "mapping_faults", "bad ArrayBuffer");
  const int slot = FaultSlotOf(data);
  return Napi::Number::New(env, slot < 0 ? 0 : gRanges[slot].faults.load(std::memory_order_relaxed));
}

}  // namespace

int RegisterFaultRange(void* addr, size_t length) {
  std::lock_guard<std::mutex> lock(gSlotLock);
  for (size_t i = 0; i < kSlots; i++) {
    if (gRanges[i].start.load(std::memory_order_relaxed) != 0) continue;
    gRanges[i].faults.store(0, std::memory_order_relaxed);
    gRanges[i].end.store(reinterpret_cast<uintptr_t>(addr) + length, std::memory_order_relaxed);
    gRanges[i].start.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    return static_cast<int>(i);
  }
  return -1;  // table full: this mapping is not guarded
}

void UnregisterFaultRange(int slot) {
  if (slot < 0 || static_cast<size_t>(slot) >= kSlots) return;
  std::lock_guard<std::mutex> lock(gSlotLock);
  gRanges[slot].start.store(0, std::memory_order_release);
}

void InitMappingFaults(Napi::Env env, Napi::Object exports) {
  std::call_once(gInstalled, Install);
  exports.Set("mappingFaultFd", Napi::Function::New(env, MappingFaultFd, "mappingFaultFd"));
  exports.Set("mappingFaults", Napi::Function::New(env, MappingFaults, "mappingFaults"));
}

}  // namespace vts
