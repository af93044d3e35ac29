/**
 * One vhost-user stream socket: non-blocking reads framed by {@link MessageFramer} (partial
 * reads, up to 8 fds per message), an outgoing queue for when the peer's buffer is full, and
 * ordered processing — while a frame handler's promise is pending, no further frame is read.
 * @module
 */
import { FdWatcher, READABLE, WRITABLE, close, dup, recvMsg, sendMsg } from '@vhost-ts/sys';
import { MessageFramer, type RawFrame } from '../codec/framer.js';
import type { Direction } from '../codec/schema.js';
import { ProtocolError } from '../errors.js';

/** What a {@link MessageConnection} reports. */
export interface ConnectionHandlers {
  /** A complete frame; the handler owns `frame.fds`. Return a promise to pause reading until it settles. */
  onFrame(frame: RawFrame): void | Promise<void>;
  /** The connection closed: `error` null on a clean EOF between messages. Called once. */
  onClose(error: Error | null): void;
}

/** Tuning of a {@link MessageConnection}. */
export interface ConnectionOptions {
  /** Frames handled per readable event before yielding to the loop (fairness). Default 64. */
  maxFramesPerEvent?: number;
  /** Bytes we queue for a peer that does not read before giving up on it. Default 1 MiB. */
  maxQueuedBytes?: number;
}

interface Outgoing {
  bytes: Uint8Array;
  fds: number[];
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try { close(fd); } catch { /* already gone */ }
  }
}

/** A framed, ordered, non-blocking vhost-user socket. */
export class MessageConnection {
  readonly fd: number;
  private readonly framer: MessageFramer;
  private readonly watcher: FdWatcher;
  private readonly out: Outgoing[] = [];
  private queuedBytes = 0;
  private paused = false;
  private closedFlag = false;
  private readonly maxFrames: number;
  private readonly maxQueued: number;

  /**
   * Takes ownership of `fd` (closed by {@link close}).
   * @param expectReply true when the peer sends replies on this socket (not requests)
   */
  constructor(fd: number, direction: Direction, expectReply: boolean, private readonly handlers: ConnectionHandlers,
    opts: ConnectionOptions = {}) {
    this.fd = fd;
    this.framer = new MessageFramer(direction, expectReply);
    this.maxFrames = opts.maxFramesPerEvent ?? 64;
    this.maxQueued = opts.maxQueuedBytes ?? 1 << 20;
    this.watcher = new FdWatcher(fd, (events, error) => this.onEvents(events, error));
    this.updateWatch();
  }

  /** True once closed. */
  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Sends one message. `fds` stay owned by the caller: if the message has to wait in the queue
   * they are dup()ed first. Errors close the connection (reported through `onClose`).
   */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.closedFlag) return;
    if (this.out.length === 0) {
      let n: number;
      try {
        n = sendMsg(this.fd, bytes, fds);
      } catch (e) {
        this.close(e as Error);
        return;
      }
      if (n === bytes.byteLength) return;
      const rest = n > 0 ? bytes.subarray(n) : bytes;
      this.enqueue(rest, n > 0 ? [] : fds);
    } else {
      this.enqueue(bytes, fds);
    }
  }

  private enqueue(bytes: Uint8Array, fds: readonly number[]): void {
    let owned: number[];
    try {
      owned = fds.map((fd) => dup(fd));
    } catch (e) {
      this.close(e as Error);
      return;
    }
    this.out.push({ bytes: bytes.slice(), fds: owned });
    this.queuedBytes += bytes.byteLength;
    if (this.queuedBytes > this.maxQueued) {
      this.close(new ProtocolError('PEER_NOT_READING', `peer does not read; ${this.queuedBytes} bytes queued`));
      return;
    }
    this.updateWatch();
  }

  private flush(): void {
    while (this.out.length > 0 && !this.closedFlag) {
      const o = this.out[0];
      let n: number;
      try {
        n = sendMsg(this.fd, o.bytes, o.fds);
      } catch (e) {
        this.close(e as Error);
        return;
      }
      if (n < 0) break;
      closeAll(o.fds);
      o.fds = [];
      this.queuedBytes -= n;
      if (n < o.bytes.byteLength) {
        o.bytes = o.bytes.subarray(n);
        break;
      }
      this.out.shift();
    }
    this.updateWatch();
  }

  private updateWatch(): void {
    if (this.closedFlag) return;
    const events = (this.paused ? 0 : READABLE) | (this.out.length > 0 ? WRITABLE : 0);
    if (events === 0) this.watcher.stop();
    else this.watcher.start(events);
  }

  private onEvents(events: number, error?: Error): void {
    if (this.closedFlag) return;
    if (error !== undefined) {
      // libuv reports POLLERR as EBADF; the socket's own error says what happened (ECONNRESET:
      // the front-end closed with replies unread). The connection closes either way.
      let why = error;
      try {
        const r = recvMsg(this.fd, this.framer.target());
        if (r !== null) closeAll(r.fds); // closing anyway: nothing received now is used
      } catch (e) {
        why = e as Error;
      }
      this.close(why);
      return;
    }
    if ((events & WRITABLE) !== 0) this.flush();
    if ((events & READABLE) !== 0 && !this.paused) this.readSome();
  }

  private readSome(): void {
    for (let i = 0; i < this.maxFrames && !this.paused && !this.closedFlag; i++) {
      let r;
      try {
        r = recvMsg(this.fd, this.framer.target());
      } catch (e) {
        this.close(e as Error);
        return;
      }
      if (r === null) return;
      if (r.bytes === 0) {
        closeAll(r.fds);
        this.close(this.framer.midMessage ? new ProtocolError('TRUNCATED', 'peer closed in the middle of a message') : null);
        return;
      }
      let frame: RawFrame | null;
      try {
        frame = this.framer.push(r.bytes, r.fds);
      } catch (e) {
        this.close(e as Error);
        return;
      }
      if (frame === null) continue;
      let p: void | Promise<void>;
      try {
        p = this.handlers.onFrame(frame);
      } catch (e) {
        this.close(e as Error);
        return;
      }
      if (p !== undefined) {
        this.paused = true;
        this.updateWatch();
        p.then(() => {
          if (this.closedFlag) return;
          this.paused = false;
          this.updateWatch();
        }, (e: Error) => this.close(e));
        return;
      }
    }
  }

  /** Closes the socket, drops queued output (closing its fds) and any half-received fds. */
  close(error: Error | null = null): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.watcher.close();
    closeAll(this.framer.takePendingFds());
    for (const o of this.out) closeAll(o.fds);
    this.out.length = 0;
    try { close(this.fd); } catch { /* ignore */ }
    this.handlers.onClose(error);
  }
}
