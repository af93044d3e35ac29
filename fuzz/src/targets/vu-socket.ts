/**
 * Target `vu-socket`: the same mutated sessions as `vu-session`, but over a real AF_UNIX
 * socketpair into `MessageConnection` (packages/vhost-user/src/transport/message-connection.ts)
 * wired to a `BackendSession` exactly as `VhostUserBackend` does, so the kernel's fd passing,
 * partial reads and writes, ordered processing and the close paths are in the loop. The client
 * writes each message in random pieces (SCM_RIGHTS on the first), then a GET_QUEUE_NUM marker
 * whose reply proves everything before it was handled, then hangs up.
 *
 * Oracles: the connection ends cleanly or with a `ProtocolError` (never another error type);
 * every reply has the REPLY flag and decodes as the reply to its request (or a u64 failure);
 * after the session is cleaned up no fd and no memfd mapping is left (including fds received in
 * replies, which the client closes); the unmutated session keeps the connection open, answers
 * the marker and serves the echo request.
 * @module
 */
import fc from 'fast-check';
import { close, openFdCount, recvMsg, sendMsg, socketpair } from '@vhost-ts/sys';
import {
  BackendSession, MessageConnection, MessageFramer, ProtocolError, decodeReply, encodeMessage,
} from '@vhost-ts/vhost-user';
import * as C from '@vhost-ts/vhost-user';
import type { EchoDevice } from '@vhost-ts/vhost-user/testing';
import type { FuzzTarget } from './target.js';
import {
  checkEcho, fdDiff, fuzzDevice, fdTable, makeFd, memfdMappings, settleFdCount, mutate, mutationArb, planArb, prepareGuest, template, type Plan, type WireMsg,
} from './vu-session.js';

export const socketArb = fc.record({
  plan: planArb,
  mutations: fc.array(mutationArb, { minLength: 0, maxLength: 5 }),
  pieces: fc.array(fc.oneof(fc.integer({ min: 1, max: 13 }), fc.constant(1 << 20)), { minLength: 1, maxLength: 4 }),
});

function fail(msg: string): never {
  throw new Error(`vu-socket: ${msg}`);
}

const tick = (ms = 0): Promise<void> => new Promise((r) => { setTimeout(r, ms); });

async function runSocket(device: EchoDevice, plan: Plan, msgs: WireMsg[], pieces: number[], strict: boolean): Promise<void> {
  const driver = prepareGuest(plan);
  const [a, b] = socketpair();
  let closed: { error: Error | null } | null = null;
  let session: BackendSession | null = null;
  const conn = new MessageConnection(a, 'frontend', false, {
    onFrame: (f) => (session as BackendSession).handle(f),
    onClose: (error) => { closed = { error }; },
  });
  session = new BackendSession({ device, send: (bytes, fds) => conn.send(bytes, fds), log: () => {}, pollIntervalMs: 2, stopTimeoutMs: 500 });

  // Client side: read replies with a framer, close every fd they bring.
  const replyFramer = new MessageFramer('frontend', true);
  const replies: number[] = [];
  let peerGone = false;
  const drain = (): void => {
    for (;;) {
      if (peerGone) return;
      let r;
      try {
        r = recvMsg(b, replyFramer.target());
      } catch {
        peerGone = true; // ECONNRESET: the back-end closed with our bytes unread
        return;
      }
      if (r === null) return;
      if (r.bytes === 0) {
        for (const fd of [...r.fds, ...replyFramer.takePendingFds()]) close(fd);
        peerGone = true;
        return;
      }
      let f;
      try {
        f = replyFramer.push(r.bytes, r.fds);
      } catch (e) {
        for (const fd of replyFramer.takePendingFds()) close(fd);
        fail(`back-end sent a malformed reply header: ${String(e)}`);
      }
      if (f === null) continue;
      replies.push(f.header.request);
      try {
        decodeReply('frontend', f.header, f.body, f.fds);
      } catch (e) {
        const ok = f.body.length === 8 && f.fds.length === 0 && Buffer.from(f.body).readBigUInt64LE(0) !== 0n;
        if (!ok && C.FRONTEND_REQUESTS.has(f.header.request)) fail(`reply to ${f.header.request} does not decode: ${(e as Error).message}`);
      } finally {
        for (const fd of f.fds) close(fd);
      }
    }
  };

  const MARKER = C.VHOST_USER_GET_QUEUE_NUM;
  const stream = [...msgs, { bytes: encodeMessage(MARKER, 0, { kind: 'none' }), fds: [] }];
  let p = 0;
  try {
    for (const m of stream) {
      if (closed !== null || peerGone) break;
      const fds = m.fds.map(makeFd);
      let off = 0;
      let first = true;
      while ((off < m.bytes.length || (first && fds.length > 0)) && closed === null && !peerGone) {
        const n = Math.max(1, Math.min(pieces[p++ % pieces.length], m.bytes.length - off));
        let sent: number;
        try {
          sent = m.bytes.length === 0 ? sendMsg(b, new Uint8Array(1), first ? fds : []) : sendMsg(b, m.bytes.subarray(off, off + n), first ? fds : []);
        } catch {
          break; // EPIPE: the back-end hung up
        }
        if (sent < 0) { drain(); await tick(); continue; }
        first = false;
        off += sent;
        if (m.bytes.length === 0) break;
      }
      for (const fd of fds) close(fd); // the kernel holds its own references
      drain();
      await tick();
    }
    // Wait for the marker's reply (everything before it handled), the hang-up, or a quiet period.
    const deadline = Date.now() + (strict ? 3000 : 300);
    while (closed === null && !peerGone && !replies.includes(MARKER) && Date.now() < deadline) {
      drain();
      await tick(1);
    }
  } finally {
    try { drain(); } finally {
      for (const fd of replyFramer.takePendingFds()) close(fd);
      close(b);
    }
  }
  const wasOpen = closed === null;
  const until = Date.now() + 3000;
  while (closed === null && Date.now() < until) await tick(1);
  if (closed === null) fail('back-end did not notice the hang-up');
  const err = (closed as { error: Error | null }).error;
  if (err !== null && !(err instanceof ProtocolError)) fail(`connection closed with a non-protocol error: ${err.stack ?? err.message}`);
  await session.close();
  if (strict) {
    if (!wasOpen || err !== null) fail(`valid session closed: ${err?.message ?? 'hang-up before the marker'}`);
    if (!replies.includes(MARKER)) fail('marker never answered in a valid session');
    checkEcho(driver);
  }
}

/** Runs one case: the mutated stream, then the valid one; checks leaks after each. */
export async function runVuSocket(device: EchoDevice, c: { plan: Plan; mutations: Parameters<typeof mutate>[1]; pieces: number[] }): Promise<void> {
  const valid = template(c.plan); // maps the shared guest memory first: not part of the count
  const fds0 = openFdCount();
  const table0 = fdTable();
  const maps0 = memfdMappings();
  await runSocket(device, c.plan, mutate(valid, c.mutations), c.pieces, c.mutations.length === 0);
  const fds1 = await settleFdCount(fds0);
  if (fds1 !== fds0) fail(`fd leak: ${fds0} before, ${fds1} after: ${fdDiff(table0, fdTable())}`);
  if (memfdMappings() !== maps0) fail(`mapping leak: ${maps0} before, ${memfdMappings()} after`);
  await runSocket(device, c.plan, valid, [1 << 20], true);
  if (await settleFdCount(fds0) !== fds0) fail('fd leak after the valid session');
  if (memfdMappings() !== maps0) fail('mapping leak after the valid session');
}

export const vuSocket: FuzzTarget = {
  name: 'vu-socket',
  description: 'mutated sessions over a real socketpair into MessageConnection + BackendSession: typed close, replies decode, no leaks, valid session works',
  testRuns: 60,
  property: () => {
    const device = fuzzDevice();
    return fc.asyncProperty(socketArb, (c) => runVuSocket(device, c));
  },
};
