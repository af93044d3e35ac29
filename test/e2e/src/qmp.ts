/**
 * A minimal QMP client (QEMU Machine Protocol, JSON lines over a unix socket): enough to drive
 * live migration from a test — capability negotiation, commands with ids, asynchronous events.
 *
 * ```
 *  QEMU → {"QMP": {...}}                      greeting
 *  us   → {"execute": "qmp_capabilities"}     leave negotiation mode
 *  us   → {"execute": "migrate", "arguments": {...}, "id": 3}
 *  QEMU → {"return": {}, "id": 3}  |  {"error": {"class": ..., "desc": ...}, "id": 3}
 *  QEMU → {"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {...}}
 * ```
 * QEMU started with `-qmp unix:PATH,server=on,wait=off` listens on PATH.
 * @module
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A QMP `error` reply, or the connection failing under a pending command. */
export class QmpError extends Error {
  override readonly name = 'QmpError';
  constructor(readonly code: 'COMMAND_FAILED' | 'CLOSED' | 'CONNECT_FAILED' | 'TIMEOUT', message: string, readonly errorClass?: string) {
    super(message);
  }
}

/** An asynchronous QMP event. */
export interface QmpEvent {
  readonly event: string;
  readonly data?: Record<string, unknown>;
}

interface Pending {
  readonly command: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** One QMP connection. Create with {@link QmpClient.connect}. */
export class QmpClient {
  /** Every event received so far, oldest first. */
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffered = '';
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => this.onClose());
    socket.on('error', () => { /* 'close' follows and fails what is pending */ });
  }

  /**
   * Connects to QEMU's QMP socket (retrying until it exists, up to `timeoutMs`), reads the
   * greeting and negotiates capabilities.
   */
  static async connect(path: string, timeoutMs = 15_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => { s.off('error', reject); resolve(s); });
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        await client.greeting();
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        if (Date.now() > deadline) throw new QmpError('CONNECT_FAILED', `QMP ${path}: ${(err as Error).message}`);
        await sleep(50);
      }
    }
  }

  private greetingWaiter: { resolve(): void; reject(e: Error): void } | null = null;
  private greeted = false;

  private greeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    for (;;) {
      const nl = this.buffered.indexOf('\n');
      if (nl < 0) return;
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (line === '') continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // QMP only sends JSON objects; ignore anything else
      }
      this.onMessage(msg);
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.greeted = true;
      this.greetingWaiter?.resolve();
      this.greetingWaiter = null;
      return;
    }
    if (typeof msg.event === 'string') {
      this.events.push({ event: msg.event, data: msg.data as Record<string, unknown> | undefined });
      return;
    }
    const id = typeof msg.id === 'number' ? msg.id : -1;
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError('COMMAND_FAILED', `${p.command}: ${e.desc ?? 'error'}`, e.class));
    } else {
      p.resolve(msg.return);
    }
  }

  private onClose(): void {
    this.closed = true;
    const err = new QmpError('CLOSED', 'QMP connection closed');
    this.greetingWaiter?.reject(err);
    this.greetingWaiter = null;
    for (const p of this.pending.values()) p.reject(new QmpError('CLOSED', `${p.command}: QMP connection closed`));
    this.pending.clear();
  }

  /** Runs one command; resolves with its `return` value, rejects with {@link QmpError}. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new QmpError('CLOSED', `${command}: QMP connection closed`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** Closes the connection (pending commands fail with CLOSED). */
  close(): void {
    this.socket.destroy();
  }
}

/** What `query-migrate` returns (the fields the tests look at). */
export interface MigrationInfo {
  readonly status?: string;
  readonly 'total-time'?: number;
  readonly downtime?: number;
  readonly 'setup-time'?: number;
  readonly ram?: { transferred?: number; total?: number; remaining?: number; 'dirty-sync-count'?: number; 'page-size'?: number; normal?: number; duplicate?: number };
  readonly 'error-desc'?: string;
}

/**
 * Polls `query-migrate` until the status is `completed` (resolves with the last info) or
 * `failed`/`cancelled` or the timeout (rejects).
 */
export async function waitMigration(qmp: QmpClient, timeoutMs: number, onPoll?: (info: MigrationInfo) => void): Promise<MigrationInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<MigrationInfo>('query-migrate');
    onPoll?.(info);
    if (info.status === 'completed') return info;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new QmpError('COMMAND_FAILED', `migration ${info.status}: ${info['error-desc'] ?? '(no error-desc)'}`);
    }
    if (Date.now() > deadline) throw new QmpError('TIMEOUT', `migration not completed within ${timeoutMs} ms (status ${info.status})`);
    await sleep(100);
  }
}
