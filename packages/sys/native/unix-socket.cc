// AF_UNIX stream sockets with SCM_RIGHTS fd passing (vhost-user transport).
// Every socket is non-blocking and close-on-exec; received fds get
// MSG_CMSG_CLOEXEC so they never leak into child processes.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "sys.h"

namespace vts {

namespace {

constexpr int kMaxFds = 8;  // vhost-user sends at most 8 fds per message

bool FillAddr(Napi::Env env, const char* fn, const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty()) {
    ThrowArg(env, fn, "path must not be empty");
    return false;
  }
  if (path.size() >= sizeof addr->sun_path) {
    ThrowSys(env, ENAMETOOLONG, fn, "socket path longer than 107 bytes");
    return false;
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

void CloseKeepErrno(int fd) {
  int saved = errno;
  ::close(fd);
  errno = saved;
}

// If `path` is a socket nobody listens on (a stale leftover of a dead
// process), remove it. A live socket or a non-socket file is left alone and
// reported as EADDRINUSE.
bool RemoveStaleSocket(Napi::Env env, const sockaddr_un& addr) {
  struct stat st;
  if (::lstat(addr.sun_path, &st) < 0) return true;  // nothing there (or not visible): let bind() decide
  if (!S_ISSOCK(st.st_mode)) {
    ThrowSys(env, EADDRINUSE, "bind", "path exists and is not a socket");
    return false;
  }
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) {
    ThrowSys(env, errno, "socket");
    return false;
  }
  int r = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int err = r < 0 ? errno : 0;
  ::close(probe);
  if (err == ECONNREFUSED) {
    if (::unlink(addr.sun_path) < 0 && errno != ENOENT) {
      ThrowSys(env, errno, "unlink");
      return false;
    }
    return true;
  }
  if (err == 0 || err == EAGAIN) {  // accepted, or a listener with a full backlog
    ThrowSys(env, EADDRINUSE, "bind", "another process is listening on this socket");
    return false;
  }
  return true;  // e.g. ENOENT (raced with a removal): bind() reports what is left
}

// A listening socket bound to `a`, or -1 with errno set and *call naming the syscall that
// failed. A socket file it bound is removed again if listen() fails.
int ListenAt(const sockaddr_un& a, int backlog, const char** call) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *call = "socket";
    return -1;
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) < 0) {
    *call = "bind";
    CloseKeepErrno(fd);
    return -1;
  }
  if (::listen(fd, backlog) < 0) {
    *call = "listen";
    int err = errno;
    ::unlink(a.sun_path);
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// Listens on a random private name next to `path` (stored in *tmp); -1 when there is no room
// for the suffix in the 107 bytes or no name could be bound.
int ListenPrivately(const std::string& path, int backlog, sockaddr_un* tmp) {
  if (path.size() + 12 > sizeof tmp->sun_path) return -1;  // ".l-" + 8 hex digits + NUL
  for (int attempt = 0; attempt < 8; attempt++) {
    uint32_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r)) {
      timespec ts;
      ::clock_gettime(CLOCK_MONOTONIC, &ts);
      r = static_cast<uint32_t>(ts.tv_nsec) ^ (static_cast<uint32_t>(::getpid()) << 12) ^ static_cast<uint32_t>(attempt);
    }
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, ".l-%08x", r);
    const std::string name = path + suffix;
    std::memset(tmp, 0, sizeof *tmp);
    tmp->sun_family = AF_UNIX;
    std::memcpy(tmp->sun_path, name.data(), name.size());
    const char* call;
    int fd = ListenAt(*tmp, backlog, &call);
    if (fd >= 0) return fd;
    if (errno != EADDRINUSE) return -1;  // another listener's name: try another; else give up
  }
  return -1;
}

Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  double backlog = 128;
  if (!ArgString(info, 0, "bind", "path", &path)) return env.Undefined();
  if (info.Length() > 1 && !info[1].IsUndefined() && !ArgInt(info, 1, "listen", "backlog", 1, 65535, &backlog))
    return env.Undefined();
  sockaddr_un addr;
  if (!FillAddr(env, "bind", path, &addr) || !RemoveStaleSocket(env, addr)) return env.Undefined();
  // The path must appear only once the socket listens: between bind() and listen() a client
  // that saw the file (a script waiting for it, then starting QEMU) would get ECONNREFUSED.
  // So listen on a private name next to it, then link() the real name to it — link, not
  // rename, so a file that appeared at the path meanwhile is still reported as in use. The
  // private name is random and never taken over (another listener, even one with our pid in
  // another container, may be using its own). Where that cannot be done — no room for the
  // suffix, or a file system without hard links — the path is bound directly, with the window.
  sockaddr_un tmp;
  int fd = ListenPrivately(path, static_cast<int>(backlog), &tmp);
  if (fd >= 0) {
    int err = ::link(tmp.sun_path, addr.sun_path) < 0 ? errno : 0;
    ::unlink(tmp.sun_path);
    if (err == 0) return Napi::Number::New(env, fd);
    ::close(fd);
    if (err == EEXIST) return ThrowSys(env, EADDRINUSE, "bind", "path exists (created while binding)");
  }
  const char* call;
  fd = ListenAt(addr, static_cast<int>(backlog), &call);
  if (fd < 0) return ThrowSys(env, errno, call);
  return Napi::Number::New(env, fd);
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd;
  if (!ArgFd(info, 0, "accept4", &lfd)) return env.Undefined();
  for (;;) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return Napi::Number::New(env, fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;  // a client that gave up: try the next one
    if (errno == EAGAIN) return Napi::Number::New(env, -1);
    return ThrowSys(env, errno, "accept4");
  }
}

Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "connect", "path", &path)) return env.Undefined();
  sockaddr_un addr;
  if (!FillAddr(env, "connect", path, &addr)) return env.Undefined();
  // Blocking connect (an AF_UNIX connect completes or fails at once unless
  // the listener's backlog is full), then switch to non-blocking.
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowSys(env, errno, "socket");
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) {
    CloseKeepErrno(fd);
    return ThrowSys(env, errno, "connect");
  }
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    CloseKeepErrno(fd);
    return ThrowSys(env, errno, "fcntl");
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Socketpair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return ThrowSys(env, errno, "socketpair");
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(uint32_t{0}, Napi::Number::New(env, sv[0]));
  out.Set(uint32_t{1}, Napi::Number::New(env, sv[1]));
  return out;
}

// sendMsg(fd, data, fds?) -> bytes sent, or -1 when the socket is full.
Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t len;
  if (!ArgFd(info, 0, "sendmsg", &fd) || !ArgBytes(info, 1, "sendmsg", "data", &data, &len)) return env.Undefined();
  int fds[kMaxFds];
  uint32_t nfds = 0;
  if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
    if (!info[2].IsArray()) return ThrowArg(env, "sendmsg", "fds must be an array");
    Napi::Array arr = info[2].As<Napi::Array>();
    nfds = arr.Length();
    if (nfds > kMaxFds) return ThrowArg(env, "sendmsg", "at most 8 fds per message");
    for (uint32_t i = 0; i < nfds; i++) {
      Napi::Value v = arr.Get(i);
      if (env.IsExceptionPending()) return env.Undefined();
      if (!v.IsNumber() || !IsIntIn(v.As<Napi::Number>().DoubleValue(), 0, INT32_MAX))
        return ThrowArg(env, "sendmsg", "fds must be integers >= 0");
      fds[i] = static_cast<int>(v.As<Napi::Number>().DoubleValue());
    }
  }
  // Ancillary data rides on the first byte; a stream socket drops it with an
  // empty payload.
  if (nfds > 0 && len == 0) return ThrowArg(env, "sendmsg", "fds need at least one byte of data");
  iovec iov{data, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, -1);
    return ThrowSys(env, errno, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// recvMsg(fd, buf) -> { bytes, fds } | null (EAGAIN). bytes 0 = EOF.
Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* data;
  size_t len;
  if (!ArgFd(info, 0, "recvmsg", &fd) || !ArgBytes(info, 1, "recvmsg", "buf", &data, &len)) return env.Undefined();
  // A zero-length read would be indistinguishable from EOF.
  if (len == 0) return ThrowArg(env, "recvmsg", "buf must not be empty");
  iovec iov{data, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return env.Null();
    return ThrowSys(env, errno, "recvmsg");
  }
  int got[kMaxFds];
  int ngot = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      std::memcpy(&rfd, p + i * sizeof(int), sizeof(int));
      if (ngot < kMaxFds) {
        got[ngot++] = rfd;
      } else {
        ::close(rfd);  // cannot happen with our control buffer size, but never leak
        msg.msg_flags |= MSG_CTRUNC;
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    // The peer sent more fds than we accept; the kernel dropped the rest.
    for (int i = 0; i < ngot; i++) ::close(got[i]);
    return ThrowSys(env, EMSGSIZE, "recvmsg", "too many fds in one message (control data truncated)");
  }
  Napi::Object out = Napi::Object::New(env);
  Napi::Array arr = Napi::Array::New(env, ngot);
  for (int i = 0; i < ngot; i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, got[i]));
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(n)));
  out.Set("fds", arr);
  return out;
}

}  // namespace

void InitUnixSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("sendMsg", Napi::Function::New(env, SendMsg, "sendMsg"));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsg, "recvMsg"));
  exports.Set("maxFdsPerMessage", Napi::Number::New(env, kMaxFds));
}

}  // namespace vts
