/**
 * A writer for the "newc" cpio format (the only one the kernel's initramfs unpacker reads).
 *
 * ```
 * header (110 ASCII bytes):  "070701" + 13 fields of 8 hex digits
 *   ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
 * name + NUL, padded to a multiple of 4 (counted from the start of the header)
 * data, padded to a multiple of 4
 * ... last entry is named "TRAILER!!!"
 * ```
 */

/** One archive member. Paths are relative (no leading `/`), parents listed before children. */
export type CpioEntry =
  | { readonly type: 'dir'; readonly path: string; readonly mode?: number }
  | { readonly type: 'file'; readonly path: string; readonly data: Uint8Array; readonly mode?: number }
  | { readonly type: 'symlink'; readonly path: string; readonly target: string }
  | { readonly type: 'chardev'; readonly path: string; readonly major: number; readonly minor: number; readonly mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Serialises entries into one newc archive (with trailer). Deterministic: mtime 0, uid/gid 0. */
export function buildNewcCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, data: Uint8Array, rdevMajor: number, rdevMinor: number, nlink: number): void => {
    const nameBuf = Buffer.from(`${name}\0`, 'utf8');
    const header =
      '070701' +
      hex8(name === 'TRAILER!!!' ? 0 : ino++) +
      hex8(mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(nlink) +
      hex8(0) + // mtime
      hex8(data.length) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(rdevMajor) +
      hex8(rdevMinor) +
      hex8(nameBuf.length) +
      hex8(0); // check (only used by the "070702" crc variant)
    parts.push(Buffer.from(header, 'ascii'), nameBuf, Buffer.alloc(pad4(110 + nameBuf.length)));
    if (data.length > 0) parts.push(Buffer.from(data.buffer, data.byteOffset, data.length), Buffer.alloc(pad4(data.length)));
  };
  const empty = new Uint8Array(0);
  for (const e of entries) {
    switch (e.type) {
      case 'dir':
        push(e.path, S_IFDIR | (e.mode ?? 0o755), empty, 0, 0, 2);
        break;
      case 'file':
        push(e.path, S_IFREG | (e.mode ?? 0o644), e.data, 0, 0, 1);
        break;
      case 'symlink':
        push(e.path, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8'), 0, 0, 1);
        break;
      case 'chardev':
        push(e.path, S_IFCHR | (e.mode ?? 0o600), empty, e.major, e.minor, 1);
        break;
    }
  }
  push('TRAILER!!!', 0, empty, 0, 0, 1);
  return Buffer.concat(parts);
}
