/**
 * Incremental message framing, pure (no I/O). The transport asks {@link MessageFramer.target}
 * for where to receive the next bytes — exactly the rest of the current header or payload, so a
 * read never crosses into the next message and fds received with a read always belong to the
 * message being read (the kernel attaches SCM_RIGHTS to the first byte of the sender's write).
 *
 * ```
 *  state HEADER: target = header[got..12)  --12 bytes--> checkHeader() --size 0--> frame
 *                                                             |
 *  state BODY:   target = body[got..size)  --size bytes------>+-------------------> frame
 * ```
 * @module
 */
import { VHOST_USER_HDR_SIZE, VHOST_USER_MAX_FDS } from '../constants.js';
import { ProtocolError } from '../errors.js';
import { checkHeader, decodeHeader, type Header } from './codec.js';
import type { Direction, RequestSpec } from './schema.js';
import { MAX_PAYLOAD_SIZE } from './schema.js';

/** A complete, not yet decoded message. */
export interface RawFrame {
  readonly header: Header;
  /** The request's spec, or null when the request type is unknown. */
  readonly spec: RequestSpec | null;
  readonly body: Uint8Array;
  readonly fds: number[];
}

/** Splits a byte stream (with fds) into messages of one direction. */
export class MessageFramer {
  private readonly headerBuf = new Uint8Array(VHOST_USER_HDR_SIZE);
  private readonly bodyBuf = new Uint8Array(MAX_PAYLOAD_SIZE);
  private got = 0;
  private header: Header | null = null;
  private spec: RequestSpec | null = null;
  private fds: number[] = [];

  /**
   * @param direction which request table the incoming messages belong to
   * @param expectReply true when the stream carries replies (front-end main socket, back-end channel)
   */
  constructor(private readonly direction: Direction, private readonly expectReply: boolean) {}

  /** True while part of a message (or fds for it) has been received. */
  get midMessage(): boolean {
    return this.got > 0 || this.header !== null || this.fds.length > 0;
  }

  /** The view the next receive should fill (never empty). */
  target(): Uint8Array {
    if (this.header === null) return this.headerBuf.subarray(this.got);
    return this.bodyBuf.subarray(this.got, this.header.size);
  }

  /**
   * Accounts `n` bytes just received into {@link target} plus the fds that came with them.
   * Returns a complete frame, or null when more bytes are needed. Throws {@link ProtocolError}
   * for a bad header; the caller then closes {@link takePendingFds}.
   */
  push(n: number, fds: readonly number[] = []): RawFrame | null {
    for (const fd of fds) this.fds.push(fd);
    if (this.fds.length > VHOST_USER_MAX_FDS) {
      throw new ProtocolError('BAD_FD_COUNT', `more than ${VHOST_USER_MAX_FDS} fds for one message`);
    }
    this.got += n;
    if (this.header === null) {
      if (this.got < VHOST_USER_HDR_SIZE) return null;
      const header = decodeHeader(this.headerBuf);
      this.spec = checkHeader(this.direction, header, this.expectReply);
      this.header = header;
      this.got = 0;
    }
    if (this.got < this.header.size) return null;
    const frame: RawFrame = {
      header: this.header, spec: this.spec, body: this.bodyBuf.slice(0, this.header.size), fds: this.fds,
    };
    this.header = null;
    this.spec = null;
    this.got = 0;
    this.fds = [];
    return frame;
  }

  /** Removes and returns the fds of the incomplete message (to close them). */
  takePendingFds(): number[] {
    const fds = this.fds;
    this.fds = [];
    return fds;
  }

  /**
   * Convenience for tests and in-memory transports: feeds a whole chunk, returning every frame
   * completed by it. Fds attach to the first byte of the chunk.
   */
  feed(bytes: Uint8Array, fds: readonly number[] = []): RawFrame[] {
    const out: RawFrame[] = [];
    let off = 0;
    let pendingFds: readonly number[] = fds;
    while (off < bytes.byteLength) {
      const t = this.target();
      const n = Math.min(t.byteLength, bytes.byteLength - off);
      t.set(bytes.subarray(off, off + n));
      off += n;
      const f = this.push(n, pendingFds);
      pendingFds = [];
      if (f !== null) out.push(f);
    }
    if (pendingFds.length > 0) this.push(0, pendingFds);
    return out;
  }
}
