// FdWatcher: a uv_poll_t on the Node event loop.
//
// Lifetime rules:
// - A started watcher holds a strong reference to its JS object, so an
//   active watcher is never garbage-collected; stop()/close() drop it.
// - The uv_poll_t lives on the heap and is freed in its uv_close callback,
//   which may run after the JS object is gone; `handle->data` is cleared
//   first so a late event never reaches a dead watcher.
// - libuv aborts the process if it must (re)arm epoll for an fd that has been
//   closed, so start() checks the fd is open and always re-adds it (stop then
//   start), and vts close() closes the watcher of an fd before closing it.
#include <fcntl.h>
#include <uv.h>

#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "sys.h"

namespace vts {

class FdWatcher;

namespace {
std::mutex gWatchLock;
std::map<std::pair<uv_loop_t*, int>, FdWatcher*> gWatchers;  // open handles by (loop, fd)

uv_loop_t* LoopOf(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  return loop;
}
}  // namespace

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {InstanceMethod<&FdWatcher::Start>("start"), InstanceMethod<&FdWatcher::Stop>("stop"),
                        InstanceMethod<&FdWatcher::Close>("close"), InstanceMethod<&FdWatcher::RefHandle>("ref"),
                        InstanceMethod<&FdWatcher::UnrefHandle>("unref")});
  }

  // new FdWatcher(fd, callback(events, errno))
  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    if (!ArgFd(info, 0, "uv_poll_init", &fd_)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      ThrowArg(env, "uv_poll_init", "callback must be a function");
      return;
    }
    loop_ = LoopOf(env);
    if (loop_ == nullptr) {
      ThrowSys(env, EINVAL, "uv_poll_init", "no event loop");
      return;
    }
    if (::fcntl(fd_, F_GETFD) < 0) {
      ThrowSys(env, errno, "uv_poll_init");
      return;
    }
    std::lock_guard<std::mutex> lock(gWatchLock);
    if (gWatchers.count({loop_, fd_}) != 0) {
      ThrowSys(env, EEXIST, "uv_poll_init", "fd already has an open FdWatcher");
      return;
    }
    uv_poll_t* h = new uv_poll_t();
    int r = uv_poll_init(loop_, h, fd_);
    if (r < 0) {
      delete h;
      ThrowSys(env, -r, "uv_poll_init");
      return;
    }
    h->data = this;
    handle_ = h;
    gWatchers[{loop_, fd_}] = this;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "vhost-ts:FdWatcher");
  }

  ~FdWatcher() override { CloseHandle(); }

  // Used by close(fd): the fd is going away, so this watcher's handle is
  // closed too (later start() throws EBADF; close() stays a no-op-safe call).
  void CloseForFdClose() {
    CloseHandle();
    DropRef();
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double events;
    if (!ArgInt(info, 0, "uv_poll_start", "events", 1, UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED,
                &events))
      return env.Undefined();
    if (handle_ == nullptr) return ThrowSys(env, EBADF, "uv_poll_start", "watcher is closed");
    if (::fcntl(fd_, F_GETFD) < 0) return ThrowSys(env, errno, "uv_poll_start");
    // Stop first so libuv re-adds the fd (EPOLL_CTL_ADD) instead of modifying
    // a registration the kernel may have dropped when the fd was closed.
    uv_poll_stop(handle_);
    int r = uv_poll_start(handle_, static_cast<int>(events), OnPoll);
    if (r < 0) {
      DropRef();
      return ThrowSys(env, -r, "uv_poll_start");
    }
    if (!refd_) {
      Ref();
      refd_ = true;
    }
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    DropRef();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    DropRef();
    callback_.Reset();
    return info.Env().Undefined();
  }

  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  void DropRef() {
    if (refd_) {
      refd_ = false;
      Unref();
    }
  }

  void CloseHandle() {
    if (handle_ == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(gWatchLock);
      auto it = gWatchers.find({loop_, fd_});
      if (it != gWatchers.end() && it->second == this) gWatchers.erase(it);
    }
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    FdWatcher* self = static_cast<FdWatcher*>(h->data);
    if (self == nullptr || self->callback_.IsEmpty()) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    // The callback may close the watcher and drop the last reference; do not
    // touch `self` after MakeCallback.
    self->callback_.MakeCallback(env.Global(),
                                 {Napi::Number::New(env, status < 0 ? 0 : events),
                                  Napi::Number::New(env, status < 0 ? -status : 0)},
                                 *self->context_);
    if (env.IsExceptionPending()) {
      // Behave like a throwing EventEmitter listener: 'uncaughtException'.
      Napi::Error e = env.GetAndClearPendingException();
      napi_fatal_exception(env, e.Value());
    }
  }

  uv_loop_t* loop_ = nullptr;
  uv_poll_t* handle_ = nullptr;
  int fd_ = -1;
  bool refd_ = false;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

void CloseWatcherForFd(Napi::Env env, int fd) {
  uv_loop_t* loop = LoopOf(env);
  FdWatcher* w = nullptr;
  {
    std::lock_guard<std::mutex> lock(gWatchLock);
    auto it = gWatchers.find({loop, fd});
    if (it != gWatchers.end()) w = it->second;
  }
  if (w != nullptr) w->CloseForFdClose();
}

void InitFdWatcher(Napi::Env env, Napi::Object exports) {
  exports.Set("FdWatcher", FdWatcher::Define(env));
  exports.Set("UV_READABLE", Napi::Number::New(env, UV_READABLE));
  exports.Set("UV_WRITABLE", Napi::Number::New(env, UV_WRITABLE));
  exports.Set("UV_DISCONNECT", Napi::Number::New(env, UV_DISCONNECT));
}

}  // namespace vts
