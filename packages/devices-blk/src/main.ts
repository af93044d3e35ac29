/**
 * `npm start`: serves an embedded default disk — a 1 GiB sparse image created on first use in
 * `.data/` at the repository root — on `/tmp/vhost-ts/blk.sock`, and prints the QEMU command
 * line that attaches a guest to it. Every `vhost-user-blk` flag works here too and overrides
 * the defaults (e.g. `npm start -- --num-queues 4`).
 * @module
 */
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlkServerConfig } from './cli-args.js';
import type { Logger } from './logger.js';
import { runBlkCli } from './run-cli.js';

/** Repository root (this file is packages/devices-blk/{src,dist}/main.*). */
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
/** Default image path. */
export const DEFAULT_IMAGE = join(REPO_ROOT, '.data', 'blk.img');
/** Default image size: 1 GiB, sparse. */
export const DEFAULT_IMAGE_SIZE = 1 << 30;
/** Default socket path. */
export const DEFAULT_SOCKET = '/tmp/vhost-ts/blk.sock';

/** Creates the default sparse image and the socket directory when missing. */
function prepare(config: BlkServerConfig, log: Logger): void {
  mkdirSync(dirname(config.socketPath), { recursive: true });
  if (config.blkFile === DEFAULT_IMAGE && !existsSync(DEFAULT_IMAGE)) {
    mkdirSync(dirname(DEFAULT_IMAGE), { recursive: true });
    const fd = openSync(DEFAULT_IMAGE, 'wx', 0o644);
    try {
      ftruncateSync(fd, DEFAULT_IMAGE_SIZE);
    } finally {
      closeSync(fd);
    }
    log.info(`created sparse image ${DEFAULT_IMAGE} (${DEFAULT_IMAGE_SIZE >> 20} MiB)`);
  }
}

/**
 * The host's own kernel and initrd when /boot has them (Debian's linux-image-amd64), so the
 * printed line runs as it is; placeholders otherwise.
 */
function hostKernel(): { kernel: string; initrd: string } {
  try {
    const kernels = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).sort();
    const newest = kernels[kernels.length - 1];
    if (newest !== undefined) {
      const initrd = `/boot/initrd.img-${newest.slice('vmlinuz-'.length)}`;
      return { kernel: `/boot/${newest}`, initrd: existsSync(initrd) ? initrd : '<initrd>' };
    }
  } catch { /* no /boot */ }
  return { kernel: '<bzImage>', initrd: '<initrd>' };
}

/** The QEMU command line attaching a guest to the served disk. */
export function qemuCommandLine(config: BlkServerConfig): string {
  const server = config.client ? ',server=on,wait=off' : '';
  const { kernel, initrd } = hostKernel();
  return [
    'qemu-system-x86_64 -machine q35,accel=kvm:tcg -cpu max -smp 2 -m 1G \\',
    '  -object memory-backend-memfd,id=mem0,size=1G,share=on -numa node,memdev=mem0 \\',
    `  -chardev socket,id=blk0,path=${config.socketPath}${server} \\`,
    `  -device vhost-user-blk-pci,chardev=blk0,num-queues=${config.numQueues} \\`,
    `  -kernel ${kernel} -initrd ${initrd} -append "console=ttyS0" -nographic`,
  ].join('\n');
}

process.exit(await runBlkCli(process.argv.slice(2), {
  name: 'vhost-ts-blk',
  defaults: { socketPath: DEFAULT_SOCKET, blkFile: DEFAULT_IMAGE },
  prepare,
  onStarted: (config) => {
    process.stdout.write(`vhost-user-blk backend ready: ${config.blkFile} on ${config.socketPath}\n` +
      `Attach a guest with (the disk appears as /dev/vda; guest RAM must be shared):\n\n${qemuCommandLine(config)}\n\n` +
      'Ctrl-C drains in-flight I/O and stops.\n');
  },
}));
