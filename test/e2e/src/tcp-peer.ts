/**
 * The host end of the guest TCP transfers, run as its own process inside the test's network
 * namespace (`ip netns exec NS node --import tsx tcp-peer.ts ...`): a Node process cannot enter a
 * namespace itself, and this keeps the host's own network untouched.
 *
 * Two listeners on `--host`:
 * - `--sink-port`: reads a connection to its end, then reports `{"event":"sink","bytes","sha256"}`
 *   and closes (the guest's `nc` exits once it sees our FIN);
 * - `--source-port`: sends `--bytes` random bytes and closes, reporting `{"event":"source",...}`.
 *   With `--hold-source` the bytes go out only after a line arrives on stdin, so the test can
 *   read the back-end's counters between the two directions.
 * `{"event":"ready","sourceSha256"}` is printed once both listen. One JSON object per stdout line.
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    'sink-port': { type: 'string' },
    'source-port': { type: 'string' },
    bytes: { type: 'string' },
    'hold-source': { type: 'boolean' },
  },
});
const host = values.host ?? '0.0.0.0';
const sinkPort = Number(values['sink-port']);
const sourcePort = Number(values['source-port']);
const size = Number(values.bytes);
if (!Number.isInteger(sinkPort) || !Number.isInteger(sourcePort) || !Number.isInteger(size) || size < 0) {
  process.stderr.write('usage: tcp-peer --host IP --sink-port N --source-port N --bytes N\n');
  process.exit(2);
}

const report = (o: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};

const payload = randomBytes(size);
const payloadSha = createHash('sha256').update(payload).digest('hex');

// allowHalfOpen: the guest's nc shuts its write side down at EOF of its stdin and still
// expects our data (source) or our FIN after we counted everything (sink).
const sink = createServer({ allowHalfOpen: true }, (s) => {
  const h = createHash('sha256');
  let bytes = 0;
  const t0 = performance.now();
  s.on('data', (d: Buffer) => {
    h.update(d);
    bytes += d.length;
  });
  s.on('end', () => {
    report({ event: 'sink', bytes, sha256: h.digest('hex'), ms: Math.round(performance.now() - t0) });
    s.end();
  });
  s.on('error', (e) => report({ event: 'error', where: 'sink', message: e.message }));
});

let released = values['hold-source'] !== true;
const waiting: (() => void)[] = [];
if (!released) {
  process.stdin.setEncoding('utf8').on('data', () => {
    released = true;
    for (const go of waiting.splice(0)) go();
  });
}

const source = createServer({ allowHalfOpen: true }, (s) => {
  s.on('data', () => { /* the guest sends nothing; ignore whatever comes */ });
  s.on('error', (e) => report({ event: 'error', where: 'source', message: e.message }));
  const send = (): void => {
    const t0 = performance.now();
    s.end(payload, () => report({ event: 'source', bytes: size, sha256: payloadSha, ms: Math.round(performance.now() - t0) }));
  };
  if (released) send();
  else {
    report({ event: 'source-held' });
    waiting.push(send);
  }
});

let listening = 0;
const onListening = (): void => {
  if (++listening === 2) report({ event: 'ready', sourceSha256: payloadSha });
};
for (const [server, port] of [[sink, sinkPort], [source, sourcePort]] as [Server, number][]) {
  server.on('error', (e) => {
    report({ event: 'error', where: 'listen', message: e.message });
    process.exit(1);
  });
  server.listen(port, host, onListening);
}
process.on('SIGTERM', () => process.exit(0));
// With --hold-source stdin is a pipe from the test; don't let it keep us alive after the test.
process.stdin.on('end', () => process.exit(0));
