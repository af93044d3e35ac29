// Plain file-descriptor calls: open, size, sync, dup, close, fd counting.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "sys.h"

namespace vts {

namespace {

// openFile(path, write, create, direct, mode)
Napi::Value OpenFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  bool write, create, direct;
  double mode;
  if (!ArgString(info, 0, "open", "path", &path) || !ArgBool(info, 1, "open", "write", false, &write) ||
      !ArgBool(info, 2, "open", "create", false, &create) || !ArgBool(info, 3, "open", "direct", false, &direct) ||
      !ArgInt(info, 4, "open", "mode", 0, 07777, &mode))
    return env.Undefined();
  int flags = O_CLOEXEC | (write ? O_RDWR : O_RDONLY) | (create ? O_CREAT : 0) | (direct ? O_DIRECT : 0);
  int fd;
  do fd = ::open(path.c_str(), flags, static_cast<mode_t>(mode)); while (fd < 0 && errno == EINTR);
  if (fd < 0) return ThrowSys(env, errno, "open");
  return Napi::Number::New(env, fd);
}

Napi::Value FstatSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, "fstat", &fd)) return env.Undefined();
  struct stat st;
  if (::fstat(fd, &st) < 0) return ThrowSys(env, errno, "fstat");
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) < 0) return ThrowSys(env, errno, "ioctl(BLKGETSIZE64)");
    return Napi::Number::New(env, static_cast<double>(bytes));
  }
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

Napi::Value Fdatasync(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fdatasync", &fd)) return info.Env().Undefined();
  int r;
  do r = ::fdatasync(fd); while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowSys(info.Env(), errno, "fdatasync");
  return info.Env().Undefined();
}

Napi::Value Fsync(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "fsync", &fd)) return info.Env().Undefined();
  int r;
  do r = ::fsync(fd); while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowSys(info.Env(), errno, "fsync");
  return info.Env().Undefined();
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "dup", &fd)) return info.Env().Undefined();
  // Never hand out 0-2: a later close of "our" fd must not hit stdio.
  int r = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (r < 0) return ThrowSys(info.Env(), errno, "dup");
  return Napi::Number::New(info.Env(), r);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, "close", &fd)) return info.Env().Undefined();
  // No EINTR retry: on Linux the fd is released even when close() reports
  // EINTR, and retrying could close an fd another thread just opened.
  CloseWatcherForFd(info.Env(), fd);
  if (::close(fd) < 0 && errno != EINTR) return ThrowSys(info.Env(), errno, "close");
  return info.Env().Undefined();
}

// Entries in /proc/self/fd, not counting the directory's own fd.
Napi::Value OpenFdCount(const Napi::CallbackInfo& info) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return ThrowSys(info.Env(), errno, "opendir");
  int self = ::dirfd(dir);
  int count = 0;
  while (struct dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    if (std::atoi(e->d_name) == self) continue;
    count++;
  }
  ::closedir(dir);
  return Napi::Number::New(info.Env(), count);
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("openFile", Napi::Function::New(env, OpenFile, "openFile"));
  exports.Set("fstatSize", Napi::Function::New(env, FstatSize, "fstatSize"));
  exports.Set("fdatasync", Napi::Function::New(env, Fdatasync, "fdatasync"));
  exports.Set("fsync", Napi::Function::New(env, Fsync, "fsync"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("openFdCount", Napi::Function::New(env, OpenFdCount, "openFdCount"));
}

}  // namespace vts
