// What the SIGBUS guard (native/mapping-faults.cc) caught: a page of a mapping made by mmap()
// whose file shrank under it. The page was replaced by private zeros instead of the process
// being killed; here the event loop learns about it.
import { eventfdRead } from './eventfd.js';
import { FdWatcher, READABLE } from './fd-watcher.js';
import { invalidArgument } from './errors.js';
import { addon } from './native.js';

/**
 * Pages of the mapping behind `buffer` (an ArrayBuffer from {@link mmap}) that faulted because
 * the file shrank: each now reads as zeros and takes writes no one else sees. 0 for a buffer
 * that is not a live mapping.
 */
export function mappingFaults(buffer: ArrayBuffer): number {
  if (!(buffer instanceof ArrayBuffer)) throw invalidArgument('mapping_faults', 'buffer must be an ArrayBuffer');
  return addon.mappingFaults(buffer);
}

const listeners = new Set<() => void>();
let watcher: FdWatcher | null = null;

/**
 * Calls `listener` on the event loop after a fault was caught in any mapping (ask
 * {@link mappingFaults} which). Returns the function that removes it. The watch does not keep
 * the process alive.
 */
export function onMappingFault(listener: () => void): () => void {
  listeners.add(listener);
  if (watcher === null) {
    const fd = addon.mappingFaultFd();
    watcher = new FdWatcher(fd, () => {
      eventfdRead(fd);
      for (const l of [...listeners]) l();
    });
    watcher.start(READABLE);
    watcher.unref();
  }
  return () => {
    listeners.delete(listener);
    if (listeners.size === 0 && watcher !== null) {
      watcher.close();
      watcher = null;
    }
  };
}
