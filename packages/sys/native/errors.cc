// SysError construction and argument validation shared by every part.
#include <string.h>

#include <cmath>
#include <string>

#include "sys.h"

namespace vts {

Napi::Value MakeSysError(Napi::Env env, int err, const char* syscall, const char* message) {
  const char* name = strerrorname_np(err);  // "EBADF"; glibc >= 2.32
  const char* desc = strerrordesc_np(err);
  std::string code = name != nullptr ? name : "E" + std::to_string(err);
  std::string text = std::string(syscall) + ": " + (message != nullptr ? message : (desc != nullptr ? desc : "error")) +
                     " (" + code + ")";
  AddonData* data = GetData(env);
  if (data != nullptr && !data->sysErrorCtor.IsEmpty()) {
    // new SysError(code, errno, syscall, message)
    Napi::Object e = data->sysErrorCtor.New({Napi::String::New(env, code), Napi::Number::New(env, err),
                                             Napi::String::New(env, syscall), Napi::String::New(env, text)});
    if (!env.IsExceptionPending()) return e;
    env.GetAndClearPendingException();  // a broken constructor must not hide the real error
  }
  Napi::Error e = Napi::Error::New(env, text);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e.Value();
}

Napi::Value ThrowSys(Napi::Env env, int err, const char* syscall, const char* message) {
  if (!env.IsExceptionPending()) {
    Napi::Value e = MakeSysError(env, err, syscall, message);
    napi_throw(env, e);
  }
  return env.Undefined();
}

Napi::Value ThrowArg(Napi::Env env, const char* fn, const char* what) { return ThrowSys(env, EINVAL, fn, what); }

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, double min, double max,
            double* out) {
  if (info.Length() > i && info[i].IsNumber()) {
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (IsIntIn(d, min, max)) {
      *out = d;
      return true;
    }
  }
  std::string msg = std::string(name) + " must be an integer in [" + std::to_string(static_cast<int64_t>(min)) +
                    ", " + std::to_string(static_cast<int64_t>(max)) + "]";
  ThrowArg(info.Env(), fn, msg.c_str());
  return false;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* fn, int* out) {
  double d;
  if (!ArgInt(info, i, fn, "fd", 0, INT32_MAX, &d)) return false;
  *out = static_cast<int>(d);
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, std::string* out) {
  if (info.Length() > i && info[i].IsString()) {
    *out = info[i].As<Napi::String>().Utf8Value();
    // An embedded NUL would silently truncate a path handed to the kernel.
    if (out->find('\0') == std::string::npos) return true;
  }
  std::string msg = std::string(name) + " must be a string without NUL characters";
  ThrowArg(info.Env(), fn, msg.c_str());
  return false;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, bool dflt, bool* out) {
  if (info.Length() <= i || info[i].IsUndefined()) {
    *out = dflt;
    return true;
  }
  if (info[i].IsBoolean()) {
    *out = info[i].As<Napi::Boolean>().Value();
    return true;
  }
  std::string msg = std::string(name) + " must be a boolean";
  ThrowArg(info.Env(), fn, msg.c_str());
  return false;
}

bool ViewBytes(napi_env env, napi_value v, uint8_t** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t length;
    void* ptr;
    if (napi_get_typedarray_info(env, v, &type, &length, &ptr, nullptr, nullptr) != napi_ok) return false;
    size_t elem = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: elem = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
      default: elem = 1;
    }
    *data = static_cast<uint8_t*>(ptr);
    *len = ptr == nullptr ? 0 : length * elem;  // detached views report no memory
    return true;
  }
  if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    size_t length;
    void* ptr;
    if (napi_get_dataview_info(env, v, &length, &ptr, nullptr, nullptr) != napi_ok) return false;
    *data = static_cast<uint8_t*>(ptr);
    *len = ptr == nullptr ? 0 : length;
    return true;
  }
  return false;
}

bool Float64View(napi_env env, napi_value v, double** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* ptr;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_float64_array) return false;
  if (ptr == nullptr) *len = 0;  // detached
  *data = static_cast<double*>(ptr);
  return true;
}

bool ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, uint8_t** data,
              size_t* len) {
  if (info.Length() > i && ViewBytes(info.Env(), info[i], data, len)) return true;
  std::string msg = std::string(name) + " must be an ArrayBufferView";
  ThrowArg(info.Env(), fn, msg.c_str());
  return false;
}

// setErrorConstructor(ctor): the TS wrapper hands over its SysError class so
// native failures are `instanceof SysError` without a JS-side rewrap.
static Napi::Value SetErrorConstructor(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) return ThrowArg(info.Env(), "setErrorConstructor", "not a function");
  GetData(info.Env())->sysErrorCtor = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorConstructor", Napi::Function::New(env, SetErrorConstructor, "setErrorConstructor"));
}

}  // namespace vts
