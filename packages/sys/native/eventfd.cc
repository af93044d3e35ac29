// eventfd: non-blocking counters used for vring kick/call and io_uring
// completion notification.
#include <sys/eventfd.h>
#include <unistd.h>

#include "sys.h"

namespace vts {

namespace {

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  double initial = 0;
  if (info.Length() > 0 && !info[0].IsUndefined() && !ArgInt(info, 0, "eventfd", "initial", 0, UINT32_MAX, &initial))
    return info.Env().Undefined();
  int fd = ::eventfd(static_cast<unsigned>(initial), EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return ThrowSys(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// Returns the counter (and resets it), or 0 when nothing is pending.
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "eventfd_read", &fd)) return info.Env().Undefined();
  uint64_t value = 0;
  ssize_t n;
  do n = ::read(fd, &value, sizeof value); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), 0);
    return ThrowSys(info.Env(), errno, "read");
  }
  // A short read means fd is not an eventfd (e.g. a pipe with 3 bytes).
  if (n != sizeof value) return ThrowSys(info.Env(), EINVAL, "read", "short read: not an eventfd");
  return Napi::Number::New(info.Env(), static_cast<double>(value));
}

Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int fd;
  double value = 1;
  if (!ArgFd(info, 0, "eventfd_write", &fd)) return info.Env().Undefined();
  if (info.Length() > 1 && !info[1].IsUndefined() && !ArgInt(info, 1, "eventfd_write", "value", 1, kMaxSafe, &value))
    return info.Env().Undefined();
  uint64_t v = static_cast<uint64_t>(value);
  ssize_t n;
  do n = ::write(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
  if (n < 0) return ThrowSys(info.Env(), errno, "write");  // EAGAIN: counter would overflow
  if (n != sizeof v) return ThrowSys(info.Env(), EINVAL, "write", "short write: not an eventfd");
  return info.Env().Undefined();
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfd", Napi::Function::New(env, Eventfd, "eventfd"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
}

}  // namespace vts
