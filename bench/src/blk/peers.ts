/**
 * The peers of the virtio-blk bench — one driver per back-end, each started as a fresh
 * process per run, listening on a unix socket the load generator connects to.
 *
 * | id             | process                                   | storage                                 |
 * |----------------|-------------------------------------------|-----------------------------------------|
 * | vhost-ts-file  | `vhost-user-blk` CLI (devices-blk)         | image file on tmpfs, io_uring engine    |
 * | qsd-file       | qemu-storage-daemon, `driver=file`         | the same image file                     |
 * | vhost-ts-null  | bench ts-server: BlkDevice + NullImage     | none; reads zero the data (or not)      |
 * | qsd-null       | qemu-storage-daemon, `driver=null-co`      | none; `read-zeroes=on` (or `off`)       |
 * | ts-instant     | bench ts-server: InstantBlkDevice          | none; completes unread — TS back-end ceiling|
 *
 * Our three peers run with the device's default adaptive busy-poll bound unless the bench is
 * given `--poll-us N` (0 = the pre-polling behaviour: sleep on the kick eventfd at once).
 *
 * qemu-storage-daemon exports the protocol node directly (no `raw` format node on top),
 * which is its fastest configuration for a raw image.
 * @module
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, startListening, tsEntry, type RunningBackend } from '../common/child.js';
import { which } from '../common/machine.js';

/** Peer identifiers. */
export type PeerId = 'vhost-ts-file' | 'qsd-file' | 'vhost-ts-null' | 'qsd-null' | 'ts-instant';

/** Everything a peer needs to start. */
export interface PeerContext {
  socket: string;
  /** Raw image for the file peers (a regular file, on tmpfs unless the bench was told otherwise). */
  image: string;
  /** Disk size for the null peers (bytes). */
  sizeBytes: number;
  queues: number;
  queueSize: number;
  /** CPUs to pin the back-end to (`taskset -c`), or null. */
  cpus: string | null;
  /** qemu-storage-daemon `aio=` for the file peer: 'threads' (its default) or 'io_uring'. */
  qsdAio: string;
  /** Busy-poll bound for our peers (µs); null or absent for their default. */
  pollUs?: number | null;
  /** File peers open the image with O_DIRECT (default false: the page cache). */
  direct?: boolean;
  /** Null peers: reads fill the buffers with zeros (default) or leave them (QSD's own default). */
  nullReadZeroes?: boolean;
}

/** `on` / `off` for the null peers' read-zeroes setting. */
function readZeroes(ctx: PeerContext): string {
  return ctx.nullReadZeroes === false ? 'off' : 'on';
}

/** `--poll-us N` when the bench overrides our peers' polling. */
function pollArgs(ctx: PeerContext): string[] {
  return ctx.pollUs === null || ctx.pollUs === undefined ? [] : ['--poll-us', String(ctx.pollUs)];
}

/** A peer driver. */
export interface Peer {
  readonly id: PeerId;
  /** Which side of the comparison: ours, the reference, or the harness ceiling. */
  readonly family: 'vhost-ts' | 'qsd' | 'ceiling';
  /** 'file' | 'null' | 'instant'. */
  readonly engine: string;
  /** Why it cannot run here, or null. */
  unavailable(): string | null;
  start(ctx: PeerContext): Promise<RunningBackend>;
}

/** How to run our CLI: `VHOST_TS_BLK_CLI` if set, else the TS source, else dist. */
export function findBlkCli(): string[] | null {
  const override = process.env.VHOST_TS_BLK_CLI;
  const candidates = [
    ...(override ? [override] : []),
    join(REPO_ROOT, 'packages/devices-blk/src/cli.ts'),
    join(REPO_ROOT, 'packages/devices-blk/dist/cli.js'),
  ];
  for (const p of candidates) {
    if (existsSync(p)) return p.endsWith('.ts') ? tsEntry(p) : [p];
  }
  return null;
}

function qsdPath(): string | null {
  return which('qemu-storage-daemon');
}

function qsdExport(node: string, ctx: PeerContext): string {
  return `type=vhost-user-blk,id=exp0,node-name=${node},addr.type=unix,addr.path=${ctx.socket},writable=on,num-queues=${ctx.queues}`;
}

const QSD_MISSING = 'qemu-storage-daemon not found (apt-get install qemu-system-x86 / qemu-utils)';

/**
 * BENCH_BLK_NODE_ARGS: extra node flags for our back-ends (not the load generator), e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof" (as BENCH_NET_NODE_ARGS does for the net bench).
 */
function ourNodeArgs(): string[] {
  return (process.env.BENCH_BLK_NODE_ARGS ?? '').split(' ').filter(Boolean);
}

/** All peers, in the order the matrix runs them. */
export const PEERS: readonly Peer[] = [
  {
    id: 'vhost-ts-file', family: 'vhost-ts', engine: 'file',
    unavailable: () => (findBlkCli() === null ? 'packages/devices-blk/src/cli.ts not found' : null),
    start: (ctx) => startListening(process.execPath, [...ourNodeArgs(), ...findBlkCli()!, '--socket-path', ctx.socket, '--blk-file', ctx.image,
      '--num-queues', String(ctx.queues), '--queue-size', String(ctx.queueSize), '--log-level', 'warn', ...pollArgs(ctx),
      ...(ctx.direct === true ? ['--direct'] : [])],
    ctx.socket, { cpus: ctx.cpus }),
  },
  {
    id: 'qsd-file', family: 'qsd', engine: 'file',
    unavailable: () => (qsdPath() === null ? QSD_MISSING : null),
    start: (ctx) => startListening(qsdPath()!, [
      '--blockdev', `driver=file,node-name=file0,filename=${ctx.image},aio=${ctx.qsdAio},cache.direct=${ctx.direct === true ? 'on' : 'off'}`,
      '--export', qsdExport('file0', ctx),
    ], ctx.socket, { cpus: ctx.cpus }),
  },
  {
    id: 'vhost-ts-null', family: 'vhost-ts', engine: 'null',
    unavailable: () => null,
    start: (ctx) => startListening(process.execPath, [...ourNodeArgs(), ...tsEntry('bench/src/blk/ts-server.ts'), '--socket', ctx.socket,
      '--engine', 'null', '--size', String(ctx.sizeBytes), '--num-queues', String(ctx.queues),
      '--queue-size', String(ctx.queueSize), '--read-zeroes', readZeroes(ctx), ...pollArgs(ctx)], ctx.socket, { cpus: ctx.cpus }),
  },
  {
    id: 'qsd-null', family: 'qsd', engine: 'null',
    unavailable: () => (qsdPath() === null ? QSD_MISSING : null),
    start: (ctx) => startListening(qsdPath()!, [
      '--blockdev', `driver=null-co,node-name=null0,size=${ctx.sizeBytes},read-zeroes=${readZeroes(ctx)}`,
      '--export', qsdExport('null0', ctx),
    ], ctx.socket, { cpus: ctx.cpus }),
  },
  {
    id: 'ts-instant', family: 'ceiling', engine: 'instant',
    unavailable: () => null,
    start: (ctx) => startListening(process.execPath, [...ourNodeArgs(), ...tsEntry('bench/src/blk/ts-server.ts'), '--socket', ctx.socket,
      '--engine', 'instant', '--size', String(ctx.sizeBytes), '--num-queues', String(ctx.queues),
      '--queue-size', String(ctx.queueSize), ...pollArgs(ctx)], ctx.socket, { cpus: ctx.cpus }),
  },
];

/** The peer with this id. */
export function peerById(id: string): Peer {
  const p = PEERS.find((x) => x.id === id);
  if (p === undefined) throw new Error(`unknown peer ${id} (known: ${PEERS.map((x) => x.id).join(', ')})`);
  return p;
}
