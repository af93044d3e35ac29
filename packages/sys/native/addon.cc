// Module entry: creates the per-environment AddonData and lets each part
// register its exports.
#include "sys.h"

namespace vts {

AddonData* GetData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<AddonData>(new AddonData());
  InitErrors(env, exports);
  InitMemory(env, exports);
  InitFillRanges(env, exports);
  InitMappingFaults(env, exports);
  InitFiles(env, exports);
  InitEventfd(env, exports);
  InitFdWatcher(env, exports);
  InitUnixSocket(env, exports);
  InitTap(env, exports);
  InitIoUring(env, exports);
  // Bumped whenever the JS <-> native calling convention changes; the TS
  // loader refuses a stale build.
  exports.Set("abiVersion", Napi::Number::New(env, 3));
  return exports;
}

}  // namespace vts

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return vts::Init(env, exports); }

NODE_API_MODULE(vhost_ts_sys, InitModule)
