// TAP devices (/dev/net/tun) with virtio-net headers, for the net backend.
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "sys.h"

namespace vts {

namespace {

// tapOpen(name, multiQueue) -> { fd, name }. An empty name lets the kernel
// pick one (tap%d).
Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  bool multiQueue;
  if (!ArgString(info, 0, "ioctl(TUNSETIFF)", "name", &name) ||
      !ArgBool(info, 1, "ioctl(TUNSETIFF)", "multiQueue", false, &multiQueue))
    return env.Undefined();
  if (name.size() >= IFNAMSIZ) return ThrowSys(env, ENAMETOOLONG, "ioctl(TUNSETIFF)", "interface name over 15 bytes");
  int fd;
  do fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0) return ThrowSys(env, errno, "open");
  ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multiQueue ? IFF_MULTI_QUEUE : 0);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    ::close(fd);
    return ThrowSys(env, err, "ioctl(TUNSETIFF)");
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, ifr.ifr_name));
  return out;
}

Napi::Value TapSetVnetHdrSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  double size;
  // The kernel wants at least sizeof(struct virtio_net_hdr) = 10.
  if (!ArgFd(info, 0, "ioctl(TUNSETVNETHDRSZ)", &fd) ||
      !ArgInt(info, 1, "ioctl(TUNSETVNETHDRSZ)", "size", 10, 256, &size))
    return env.Undefined();
  int sz = static_cast<int>(size);
  if (::ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) return ThrowSys(env, errno, "ioctl(TUNSETVNETHDRSZ)");
  return env.Undefined();
}

Napi::Value TapSetOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  double flags;
  if (!ArgFd(info, 0, "ioctl(TUNSETOFFLOAD)", &fd) ||
      !ArgInt(info, 1, "ioctl(TUNSETOFFLOAD)", "flags", 0, 0xffff, &flags))
    return env.Undefined();
  if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) < 0)
    return ThrowSys(env, errno, "ioctl(TUNSETOFFLOAD)");
  return env.Undefined();
}

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
  exports.Set("tapSetVnetHdrSize", Napi::Function::New(env, TapSetVnetHdrSize, "tapSetVnetHdrSize"));
  exports.Set("tapSetOffload", Napi::Function::New(env, TapSetOffload, "tapSetOffload"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("TUN_F_CSUM", Napi::Number::New(env, TUN_F_CSUM));
  c.Set("TUN_F_TSO4", Napi::Number::New(env, TUN_F_TSO4));
  c.Set("TUN_F_TSO6", Napi::Number::New(env, TUN_F_TSO6));
  c.Set("TUN_F_TSO_ECN", Napi::Number::New(env, TUN_F_TSO_ECN));
  c.Set("TUN_F_UFO", Napi::Number::New(env, TUN_F_UFO));
  exports.Set("tunConstants", c);
}

}  // namespace vts
