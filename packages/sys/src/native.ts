// Loads the addon and checks, once, that it speaks the convention this
// wrapper was written against (ABI version, struct sizes, constants).
import { createRequire } from 'node:module';
import { SysError } from './errors.js';

/** Native FdWatcher (fd-watcher.cc). */
export interface NativeFdWatcher {
  start(events: number): void;
  stop(): void;
  close(): void;
  ref(): void;
  unref(): void;
}

/** Native IoUring (io-uring.cc). */
export interface NativeIoUring {
  readonly entries: number;
  readonly eventFd: number;
  readonly inflight: number;
  setBuffer(index: number, buffer: ArrayBuffer | ArrayBufferView | null): void;
  submit(ops: Float64Array, count: number, iovs: Float64Array): number;
  runInline(ops: Float64Array, count: number, iovs: Float64Array, out: Float64Array): number;
  reap(out: Float64Array): number;
  completionsReady(): boolean;
  close(): void;
}

/** The addon's exports, exactly as native/*.cc define them. */
export interface NativeAddon {
  abiVersion: number;
  setErrorConstructor(ctor: typeof SysError): void;
  memfdCreate(name: string): number;
  ftruncate(fd: number, size: number): void;
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): void;
  mappingFaultFd(): number;
  mappingFaults(buffer: ArrayBuffer): number;
  copyRanges(dst: ArrayBufferView, src: ArrayBufferView, plan: Float64Array, count: number, prefetchDst: boolean): void;
  fillRanges(views: readonly ArrayBufferView[], plan: Float64Array, count: number, value: number): void;
  fillStats(): [number, number, number];
  fillSharedFrom: number;
  openFile(path: string, write: boolean, create: boolean, direct: boolean, mode: number): number;
  fstatSize(fd: number): number;
  fdatasync(fd: number): void;
  fsync(fd: number): void;
  dup(fd: number): number;
  close(fd: number): void;
  openFdCount(): number;
  eventfd(initial: number): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, value: number): void;
  FdWatcher: new (fd: number, cb: (events: number, errno: number) => void) => NativeFdWatcher;
  UV_READABLE: number;
  UV_WRITABLE: number;
  UV_DISCONNECT: number;
  unixListen(path: string, backlog: number): number;
  unixAccept(fd: number): number;
  unixConnect(path: string): number;
  socketpair(): [number, number];
  sendMsg(fd: number, data: Uint8Array, fds: readonly number[] | undefined): number;
  recvMsg(fd: number, buf: Uint8Array): { bytes: number; fds: number[] } | null;
  maxFdsPerMessage: number;
  tapOpen(name: string, multiQueue: boolean): { fd: number; name: string };
  tapSetVnetHdrSize(fd: number, size: number): void;
  tapSetOffload(fd: number, flags: number): void;
  tunConstants: Record<string, number>;
  IoUring: new (entries: number) => NativeIoUring;
  ioringOps: Record<string, number>;
  IOSQE_ASYNC: number;
  ioUringLayout: Record<string, number>;
  fallocConstants: Record<string, number>;
}

/** Calling-convention version this wrapper expects (native/addon.cc). */
const ABI_VERSION = 3;

// src/ and dist/ both sit one level below the package root.
const require = createRequire(import.meta.url);
/** The loaded addon. Internal: use the typed functions of this package. */
export const addon = require('../build/Release/vhost_ts_sys.node') as NativeAddon;

if (addon.abiVersion !== ABI_VERSION) {
  throw new Error(`@vhost-ts/sys: addon ABI ${addon.abiVersion}, wrapper expects ${ABI_VERSION}; run node-gyp rebuild`);
}
addon.setErrorConstructor(SysError);

/** Throws at load time when a native value differs from what the TS side hard-codes. */
export function assertNative(what: string, actual: unknown, expected: unknown): void {
  if (actual !== expected) {
    throw new Error(`@vhost-ts/sys: ${what} is ${String(actual)} in the addon, ${String(expected)} expected; stale build?`);
  }
}
