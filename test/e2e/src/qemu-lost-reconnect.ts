/**
 * Demonstrates the QEMU front-end limitation behind the restart tests' "no restart inside the
 * setup replay" rule (docs/protocol.md, "Front-end limitation: QEMU 7.2 loses a device…"):
 * a back-end that drops the connection while QEMU replays its setup (here: on the first
 * request, GET_FEATURES, i.e. inside vhost_dev_init) leaves QEMU's vhost-user-blk device
 * without an event handler. QEMU keeps re-dialing the socket but never sends a message again,
 * so the next, healthy back-end receives nothing.
 *
 * ```
 * node --conditions=vhost-ts-source --import tsx test/e2e/src/qemu-lost-reconnect.ts          # lost
 * node --conditions=vhost-ts-source --import tsx test/e2e/src/qemu-lost-reconnect.ts --control # no drop: served
 * ```
 * Prints one `RESULT` line: the requests the healthy back-end received after the crash. With
 * QEMU 7.2 (Debian 12): ~25 with `--control`, 0 without. Not a tap test: it documents QEMU's
 * behaviour, it does not test ours.
 * @module
 */
import { createServer, type Socket } from 'node:net';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeWorkDir, startVhostTsBlk } from './backends.js';
import { detectEnv } from './env.js';
import { buildInitramfs } from './initramfs.js';
import { runGuest } from './qemu.js';

const control = process.argv.includes('--control');
const env = detectEnv();
if (env.kernel === null || env.busybox === null) throw new Error('needs a kernel and busybox (see env.ts)');
const work = makeWorkDir('vtlost-');
const image = join(work.dir, 'disk.img');
writeFileSync(image, Buffer.alloc(4 << 20));
const socket = join(work.dir, 'blk.sock');
const log = (m: string): void => console.log(`${new Date().toISOString()} ${m}`);
const stopGuest = new AbortController();
const first = await startVhostTsBlk({ image, socket, extraArgs: ['--log-level', 'debug'] });
const initrd = buildInitramfs({
  kernel: env.kernel, busybox: env.busybox, script: `
i=0; while [ $i -lt 2000 ]; do dd if=/dev/zero of=/dev/vda bs=64k count=4 oflag=direct status=none; i=$((i+1)); sleep 0.1; done`,
});
const guest = runGuest({
  kernel: env.kernel, initrd, smp: 1, timeoutMs: 600_000, signal: stopGuest.signal,
  extraArgs: ['-chardev', `socket,id=rblk,path=${socket},reconnect=1`, '-device', 'vhost-user-blk-pci,chardev=rblk,num-queues=1,addr=0x04'],
}).catch((e: Error) => log(`guest ended: ${e.message.split('\n')[0]}`));
try {
  // Running: the driver's probe restarted the device (three SET_STATUS), then some I/O.
  while (!/SET_STATUS[\s\S]*SET_STATUS[\s\S]*SET_STATUS/.test(first.logs())) await sleep(200);
  await sleep(5000);
  log('SIGKILL the first back-end');
  first.process.kill('SIGKILL');
  await new Promise((r) => first.process.once('exit', r));
  if (!control) {
    // A "back-end" that dies on QEMU's first request; then it keeps the next connection open.
    rmSync(socket, { force: true });
    const conns: Socket[] = [];
    const srv = createServer((c) => {
      const k = conns.push(c);
      log(`dropping back-end: connection ${k}`);
      c.once('data', (d) => {
        log(`dropping back-end: connection ${k}: request ${d.readUInt32LE(0)}; closing it`);
        c.destroy();
      });
    });
    await new Promise<void>((r) => srv.listen(socket, r));
    while (conns.length < 2) await sleep(50);
    await sleep(5000);
    log(`dropping back-end: ${conns.length} connection(s), gone`);
    conns.forEach((c) => c.destroy());
    await new Promise((r) => srv.close(r));
  }
  const next = await startVhostTsBlk({ image, socket, extraArgs: ['--log-level', 'debug'] });
  log('healthy back-end started');
  await sleep(25_000);
  const requests = next.logs().split('\n').filter((l) => l.includes('<- VHOST_USER')).length;
  console.log(`RESULT ${control ? 'control' : 'dropped-during-init'}: connected ${next.logs().includes('front-end connected')}, ${requests} request(s) received`);
  await next.stop();
} finally {
  stopGuest.abort(new Error('done'));
  await guest;
  await first.stop();
  work.cleanup();
}
