/**
 * `@vhost-ts/sys`: the system calls vhost-ts needs — shared memory, eventfds,
 * fd watching on the Node loop, Unix sockets with fd passing, io_uring, TAP.
 * Fds are plain numbers; every failure is a {@link SysError}.
 */
export { SysError } from './errors.js';
export { MAX_MAPPING_LENGTH, memfdCreate, ftruncate, mmap, munmap, copyRanges } from './memory.js';
export { FILL_SHARED_FROM, fillRanges, fillStats, type FillStats } from './fill-ranges.js';
export { mappingFaults, onMappingFault } from './mapping-faults.js';
export { type OpenFileOptions, openFile, fstatSize, fdatasync, fsync, dup, close, openFdCount } from './files.js';
export { OwnedFd } from './owned-fd.js';
export { eventfd, eventfdRead, eventfdWrite } from './eventfd.js';
export { FdWatcher, type FdWatcherCallback, READABLE, WRITABLE, DISCONNECT } from './fd-watcher.js';
export {
  MAX_FDS_PER_MESSAGE,
  type RecvResult,
  unixListen,
  unixAccept,
  unixConnect,
  socketpair,
  sendMsg,
  recvMsg,
} from './unix-socket.js';
export {
  type TapHandle,
  type TapOpenOptions,
  tapOpen,
  tapSetVnetHdrSize,
  tapSetOffload,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_ECN,
  TUN_F_UFO,
} from './tap.js';
export {
  IoUring,
  IORING_OP,
  IOSQE_ASYNC,
  OP_STRIDE,
  IOV_STRIDE,
  MAX_BUFFERS,
  MAX_IOV_PER_OP,
  MAX_ENTRIES,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
} from './io-uring.js';
