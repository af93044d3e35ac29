// Shared declarations for the vhost-ts syscall addon.
//
// Style: C++ exceptions are off (NAPI_DISABLE_CPP_EXCEPTIONS, -fno-exceptions).
// Every entry point validates its own arguments — the TypeScript wrapper does
// too, but a caller may bypass it — and reports failures by throwing a
// SysError into JS and returning `undefined`. Nothing here may crash on bad
// input.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <string>

namespace vts {

// Largest integer a double holds exactly (2^53 - 1).
constexpr double kMaxSafe = 9007199254740991.0;

// One live mmap() made by this addon. Owned by the ArrayBuffer finalizer;
// `mapped` is cleared by munmap() so the finalizer does not unmap twice.
struct Mapping {
  void* addr;
  size_t length;
  bool mapped;
  int faultSlot;  // its entry in the SIGBUS guard's table (mapping-faults.cc), or -1
};

// SIGBUS guard (mapping-faults.cc): list a live mapping / take it off the list.
int RegisterFaultRange(void* addr, size_t length);
void UnregisterFaultRange(int slot);
// The guard's slot of the live mapping starting at `addr`, or -1 (memory.cc).
int FaultSlotOf(void* addr);

// Per-environment state (napi instance data): worker threads each get one.
// Process-wide state (live mappings, watched fds) lives in the .cc files that
// own it, behind a mutex: addresses and fds are per process, not per isolate,
// and finalizers may run after this struct is gone at environment teardown.
struct AddonData {
  Napi::FunctionReference sysErrorCtor;  // set by setErrorConstructor()
};

AddonData* GetData(Napi::Env env);

// --- errors (errors.cc) ---------------------------------------------------
// Builds a SysError (or, before the TS side registered its class, a plain
// Error carrying the same fields).
Napi::Value MakeSysError(Napi::Env env, int err, const char* syscall, const char* message = nullptr);
// Throws MakeSysError(...) and returns undefined, for `return ThrowSys(...)`.
Napi::Value ThrowSys(Napi::Env env, int err, const char* syscall, const char* message = nullptr);
// Argument errors: EINVAL SysErrors whose message names the argument.
Napi::Value ThrowArg(Napi::Env env, const char* fn, const char* what);

// Argument readers: return false after throwing an EINVAL SysError.
bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, double min, double max,
            double* out);
bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* fn, int* out);
bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, std::string* out);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, bool dflt, bool* out);
// Any ArrayBufferView (TypedArray, Buffer or DataView): data pointer + length.
bool ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, uint8_t** data,
              size_t* len);
// The same for a value that is not an argument (an array element); false, with
// nothing thrown, when it is no ArrayBufferView.
bool ViewBytes(napi_env env, napi_value v, uint8_t** data, size_t* len);
// A Float64Array (op records, copy and fill plans): its doubles and length (0
// when detached); false, with nothing thrown, for anything else.
bool Float64View(napi_env env, napi_value v, double** data, size_t* len);
// True when d is an integer in [min, max].
inline bool IsIntIn(double d, double min, double max) {
  return d >= min && d <= max && static_cast<double>(static_cast<int64_t>(d)) == d;
}

// --- fd watching (fd-watcher.cc) ----------------------------------------
// Closes the uv handle of this environment's FdWatcher on `fd`, if any.
// close() calls it first: libuv aborts the process when it has to
// re-arm an fd that was closed under an active poll handle.
void CloseWatcherForFd(Napi::Env env, int fd);

// --- module parts: each adds its exports --------------------------------
void InitErrors(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitFillRanges(Napi::Env env, Napi::Object exports);
void InitMappingFaults(Napi::Env env, Napi::Object exports);
void InitFiles(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitFdWatcher(Napi::Env env, Napi::Object exports);
void InitUnixSocket(Napi::Env env, Napi::Object exports);
void InitTap(Napi::Env env, Napi::Object exports);
void InitIoUring(Napi::Env env, Napi::Object exports);

}  // namespace vts
