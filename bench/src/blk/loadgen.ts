/**
 * The virtio-blk load generator, run as its own process (one fresh process per measurement):
 * see {@link runLoad}. Prints ONE JSON line ({@link LoadgenResult}) on stdout.
 *
 *   node --conditions=vhost-ts-source --import tsx bench/src/blk/loadgen.ts \
 *     --socket /tmp/blk.sock --pattern randread --bs 4096 --qd 32 [--queues 1] [--queue-size 256] \
 *     [--duration 5] [--warmup 1] [--seed 1] [--no-event-idx]
 *
 * Exit status: 0 when the run completed (the line may still report `errors` — the caller
 * checks), 1 when it could not run (the line says why), 2 on bad flags.
 * @module
 */
import { parseLoadgenArgs, runLoad, type LoadgenArgs } from './run-load.js';

async function main(): Promise<void> {
  let a: LoadgenArgs;
  try {
    a = parseLoadgenArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`loadgen: ${(e as Error).message}\n`);
    process.exit(2);
  }
  try {
    const r = await runLoad(a);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(r.ok ? 0 : 1);
  } catch (e) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: (e as Error).message, socket: a.socket })}\n`);
    process.exit(1);
  }
}

await main();
