{
  "targets": [
    {
      "target_name": "vhost_ts_sys",
      "sources": ["native/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
