/**
 * Target `net-ctrl`: the virtio-net control queue (packages/devices-net/src/ctrl-queue.ts,
 * `VirtioNetDevice.handleCtrl`, `setMacTables`) over a MockGuest, split or packed.
 *
 * The guest posts random commands — every class and command of virtio 1.2 §5.1.6.5 plus unknown
 * ones, payloads of the right length or not, MAC tables with consistent or lying entry counts,
 * VLAN ids past 4095, queue-pair counts out of range — in chains split anywhere, with 0–2 writable
 * bytes, direct or indirect, with a random subset of the control features acked. A model written
 * from §5.1.6.5 decides each command's ack and its effect on the filter, MAC, VLAN and pair state.
 * Oracles: chains without an ack byte come back with length 0 and change nothing; every other
 * chain (one without class/command gets VIRTIO_NET_ERR) comes back with length 1 and the model's ack in its first writable
 * byte; the device state equals the model after every command; readable buffers are unchanged and
 * no canary is touched; the queue never breaks.
 * @module
 */
import fc from 'fast-check';
import {
  LoopbackBackend, MAC_TABLE_ENTRIES, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MQ, VirtioNetDevice, macKey,
} from '@vhost-ts/devices-net';
import type { QueueContext } from '@vhost-ts/vhost-user';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import type { FuzzTarget } from './target.js';

const OK = 0;
const ERR = 1;
const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef);

const macArb = fc.uint8Array({ minLength: 6, maxLength: 6 });
const tableArb = fc.record({
  macs: fc.array(macArb, { maxLength: 4 }),
  /** Added to the true entry count (a lying count). */
  lie: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: -2, max: 3 }), fc.constant(MAC_TABLE_ENTRIES + 1)),
});
const cmdArb = fc.record({
  cls: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 5 }) }, fc.nat({ max: 255 })),
  cmd: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 2 }) }, fc.nat({ max: 255 })),
  kind: fc.constantFrom('byte', 'mac', 'tables', 'u16', 'u64', 'random'),
  byte: fc.nat({ max: 2 }),
  mac: macArb,
  uni: tableArb,
  multi: tableArb,
  /** Entries beyond what the device keeps (overflow → accept-all flags). */
  bigUni: fc.boolean(),
  u16: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constantFrom(4095, 4096, 0xffff)),
  random: fc.uint8Array({ maxLength: 20 }),
  trailing: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 3 })),
  huge: fc.oneof({ weight: 30, arbitrary: fc.constant(false) }, fc.constant(true)),
  cuts: fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 2 }),
  ackLen: fc.oneof({ weight: 10, arbitrary: fc.constant(1) }, fc.constant(0), fc.constant(2)),
  readableOnlyOne: fc.oneof({ weight: 15, arbitrary: fc.constant(false) }, fc.constant(true)),
  indirect: fc.boolean(),
});

export const ctrlArb = fc.record({
  pairs: fc.integer({ min: 1, max: 3 }),
  packed: fc.boolean(),
  ackRx: fc.boolean(),
  ackVlan: fc.boolean(),
  ackAnnounce: fc.boolean(),
  ackMacAddr: fc.boolean(),
  ackMq: fc.boolean(),
  cmds: fc.array(cmdArb, { minLength: 1, maxLength: 12 }),
});
type Scenario = typeof ctrlArb extends fc.Arbitrary<infer T> ? T : never;
type Cmd = Scenario['cmds'][number];

function fail(msg: string): never {
  throw new Error(`net-ctrl: ${msg}`);
}

function le32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

/** The command-specific data of one generated command. */
function payload(c: Cmd): Uint8Array {
  let body: Uint8Array;
  switch (c.kind) {
    case 'byte': body = Uint8Array.of(c.byte); break;
    case 'mac': body = c.mac; break;
    case 'u16': body = Uint8Array.of(c.u16 & 0xff, c.u16 >>> 8); break;
    case 'u64': body = new Uint8Array(8); break;
    case 'random': body = c.random; break;
    case 'tables': {
      const uni = c.bigUni ? Array.from({ length: MAC_TABLE_ENTRIES + 2 }, (_, i) => Uint8Array.of(2, 0, 0, 0, i >> 8, i & 0xff)) : c.uni.macs;
      const parts: Uint8Array[] = [le32(Math.max(0, uni.length + c.uni.lie)), ...uni, le32(Math.max(0, c.multi.macs.length + c.multi.lie)), ...c.multi.macs];
      body = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of parts) { body.set(p, at); at += p.length; }
      break;
    }
  }
  const out = new Uint8Array(body.length + c.trailing);
  out.set(body);
  return out;
}

/** Model state of the device (virtio 1.2 §5.1.6.5). */
interface State {
  promisc: boolean; allmulti: boolean; alluni: boolean;
  uni: Set<number>; multi: Set<number>; mac: Uint8Array; vlans: Set<number>; announceAcked: number;
}

/** Parses `virtio_net_ctrl_mac` ×2 (§5.1.6.5.2); null when the lengths do not add up. */
function parseTables(d: Uint8Array): number[][] | null {
  let p = 0;
  const out: number[][] = [[], []];
  for (let t = 0; t < 2; t++) {
    if (p + 4 > d.length) return null;
    const n = new DataView(d.buffer, d.byteOffset + p).getUint32(0, true);
    p += 4;
    if (p + n * 6 > d.length) return null;
    for (let e = 0; e < n; e++, p += 6) out[t].push(macKey(d, p));
  }
  return p === d.length ? out : null;
}

function model(st: State, cls: number, cmd: number, d: Uint8Array, f: { rx: boolean; vlan: boolean; announce: boolean; macAddr: boolean; mq: boolean }, pairs: number): number {
  switch (cls) {
    case 0: // RX: PROMISC / ALLMULTI only (the EXTRA commands are not offered), one byte
      if (!f.rx || d.length !== 1 || cmd > 1) return ERR;
      if (cmd === 0) st.promisc = d[0] !== 0; else st.allmulti = d[0] !== 0;
      return OK;
    case 1: // MAC
      if (cmd === 1) {
        if (!f.macAddr || d.length !== 6) return ERR;
        st.mac = d.slice();
        return OK;
      }
      if (cmd === 0) {
        if (!f.rx) return ERR;
        const t = parseTables(d);
        if (t === null) return ERR;
        st.uni = new Set(t[0].slice(0, MAC_TABLE_ENTRIES));
        st.multi = new Set(t[1].slice(0, MAC_TABLE_ENTRIES));
        st.alluni = t[0].length > MAC_TABLE_ENTRIES;
        if (t[1].length > MAC_TABLE_ENTRIES) st.allmulti = true;
        return OK;
      }
      return ERR;
    case 2: { // VLAN
      if (!f.vlan || d.length !== 2) return ERR;
      const vid = d[0] | (d[1] << 8);
      if (vid >= 4096 || cmd > 1) return ERR;
      if (cmd === 0) st.vlans.add(vid); else st.vlans.delete(vid);
      return OK;
    }
    case 3: // ANNOUNCE_ACK
      if (!f.announce || cmd !== 0) return ERR;
      st.announceAcked++;
      return OK;
    case 4: { // MQ VQ_PAIRS_SET: 1 ≤ n ≤ max_virtqueue_pairs (§5.1.6.5.5)
      if (!f.mq || cmd !== 0 || d.length !== 2) return ERR;
      const n = d[0] | (d[1] << 8);
      return n >= 1 && n <= pairs ? OK : ERR;
    }
    default: return ERR; // GUEST_OFFLOADS is never offered on the loopback path; unknown classes
  }
}

export function runNetCtrl(s: Scenario): void {
  const device = new VirtioNetDevice({ backend: new LoopbackBackend(), mac: MAC, queuePairs: s.pairs, ctrlQueue: true });
  let acked = device.features;
  const drop = (b: number, keep: boolean) => { if (!keep) acked &= ~(1n << BigInt(b)); };
  drop(VIRTIO_NET_F_CTRL_RX, s.ackRx);
  drop(VIRTIO_NET_F_CTRL_VLAN, s.ackVlan);
  drop(VIRTIO_NET_F_GUEST_ANNOUNCE, s.ackAnnounce);
  drop(VIRTIO_NET_F_CTRL_MAC_ADDR, s.ackMacAddr);
  drop(VIRTIO_NET_F_MQ, s.ackMq);
  device.setFeatures(acked);
  const has = (b: number) => (device.features & acked & (1n << BigInt(b))) !== 0n;
  const f = { rx: has(VIRTIO_NET_F_CTRL_RX), vlan: has(VIRTIO_NET_F_CTRL_VLAN), announce: has(VIRTIO_NET_F_GUEST_ANNOUNCE), macAddr: has(VIRTIO_NET_F_CTRL_MAC_ADDR), mq: has(VIRTIO_NET_F_MQ) };
  const gOpts = { queueSize: 32, heapBytes: 0x20000, indirectEntries: 8 };
  const g = s.packed ? new MockPackedGuest(gOpts) : new MockGuest(gOpts);
  const broken: string[] = [];
  const ctx: QueueContext = { index: 2 * s.pairs, queue: g.device, memory: g.memory, inflight: null, notify: () => {}, broken: (r) => { broken.push(r); } };
  const handler = device.startQueue(2 * s.pairs, ctx);
  const st: State = {
    promisc: device.filter.promisc, allmulti: device.filter.allmulti, alluni: device.filter.alluni,
    uni: new Set(), multi: new Set(), mac: MAC.slice(), vlans: new Set(), announceAcked: 0,
  };

  for (const c of s.cmds) {
    const data = c.huge ? new Uint8Array(4097) : payload(c);
    const readable = c.readableOnlyOne ? Uint8Array.of(c.cls) : new Uint8Array(2 + data.length);
    if (!c.readableOnlyOne) { readable[0] = c.cls; readable[1] = c.cmd; readable.set(data, 2); }
    const rbufs: { gpa: number; len: number; content: Uint8Array }[] = [];
    let at = 0;
    const points = [...new Set(c.cuts.map((x) => x % (readable.length + 1)))].filter((x) => x > 0 && x < readable.length).sort((a, b) => a - b);
    for (const end of [...points, readable.length]) {
      const content = readable.slice(at, end);
      const gpa = g.alloc(content.length);
      g.write(gpa, content);
      rbufs.push({ gpa, len: content.length, content });
      at = end;
    }
    const ackGpa = c.ackLen > 0 ? g.alloc(c.ackLen) : -1;
    if (ackGpa >= 0) g.write(ackGpa, new Uint8Array(c.ackLen).fill(0xee));
    const head = g.driver.add(rbufs, ackGpa >= 0 ? [{ gpa: ackGpa, len: c.ackLen }] : [], { indirect: c.indirect && rbufs.length < 8 });
    if (head < 0) fail('control ring full');
    g.driver.publish();
    handler.onKick();
    const used = g.driver.popUsed();
    if (used < 0) fail('command not completed');
    if (g.driver.popUsed() >= 0) fail('more completions than commands');
    // With room for the ack every command is answered; shorter than class + command is ERR.
    const answerable = c.ackLen >= 1;
    if (!answerable) {
      if (g.driver.lastLen !== 0) fail(`unanswerable command returned with length ${g.driver.lastLen}`);
      if (ackGpa >= 0 && g.read(ackGpa, c.ackLen).some((b) => b !== 0xee)) fail('ack written for an unanswerable command');
    } else {
      const want = readable.length > 4096 || readable.length < 2 ? ERR : model(st, c.cls, c.cmd, readable.subarray(2), f, s.pairs);
      if (g.driver.lastLen !== 1) fail(`used length ${g.driver.lastLen}, expected 1`);
      const ack = g.read(ackGpa, c.ackLen);
      if (ack[0] !== want) fail(`class ${c.cls} cmd ${c.cmd} (${readable.length - 2} bytes): ack ${ack[0]}, model ${want}`);
      if (c.ackLen > 1 && ack[1] !== 0xee) fail('device wrote past the ack byte');
    }
    // Device state equals the model.
    const fl = device.filter;
    if (fl.promisc !== st.promisc || fl.allmulti !== st.allmulti || fl.alluni !== st.alluni) {
      fail(`filter flags promisc ${fl.promisc}/${st.promisc} allmulti ${fl.allmulti}/${st.allmulti} alluni ${fl.alluni}/${st.alluni}`);
    }
    if (fl.unicast.size !== st.uni.size || [...st.uni].some((k) => !fl.unicast.has(k))) fail('unicast table differs from the model');
    if (fl.multicast.size !== st.multi.size || [...st.multi].some((k) => !fl.multicast.has(k))) fail('multicast table differs from the model');
    if (Buffer.compare(device.readConfig(0, 6), st.mac) !== 0) fail('config mac differs from the model');
    if (fl.macKey !== macKey(st.mac, 0)) fail('filter MAC differs from config space');
    if (device.vlans.size !== st.vlans.size || [...st.vlans].some((v) => !device.vlans.has(v))) fail('VLAN set differs from the model');
    for (const b of rbufs) if (Buffer.compare(g.read(b.gpa, b.len), b.content) !== 0) fail('a readable buffer was modified');
  }
  if (broken.length > 0) fail(`broken: ${broken[0]}`);
  const bad = g.checkCanaries();
  if (bad.length > 0) fail(`canaries: ${bad[0]}`);
  device.close();
}

export const netCtrl: FuzzTarget = {
  name: 'net-ctrl',
  description: 'virtio-net control queue: every class/command, bad lengths and chains, vs a §5.1.6.5 model of acks and state',
  testRuns: 250,
  property: () => fc.property(ctrlArb, (s) => { runNetCtrl(s); }),
};
