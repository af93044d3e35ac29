{
  "targets": [
    {
      "target_name": "vhost_ts_sys",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/memory.cc",
        "native/fill-ranges.cc",
        "native/mapping-faults.cc",
        "native/files.cc",
        "native/eventfd.cc",
        "native/fd-watcher.cc",
        "native/unix-socket.cc",
        "native/tap.cc",
        "native/io-uring.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-O3", "-fexceptions"],
      "cflags_cc!": ["-O3", "-fexceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-O2", "-Wall", "-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-fno-exceptions", "-fno-rtti"],
      "ldflags": ["-Wl,-z,nodelete"]
    }
  ]
}
