import t from 'tap';
import { SwitchBackend } from '../src/switch-backend.js';
import { MacTable } from '../src/mac-table.js';
import { FrameBatch } from '../src/frame-batch.js';
import { PortCounters } from '../src/port-counters.js';
import type { NetPortSink } from '../src/net-backend.js';

class RecordingSink implements NetPortSink {
  readonly counters = new PortCounters();
  activePairs = 1;
  got: { pair: number; dst: string; src: string }[] = [];
  constructor(readonly name: string) {}
  deliver(pair: number, batch: FrameBatch, indices: Uint16Array | null, count: number): void {
    for (let k = 0; k < count; k++) {
      const f = batch.frame(indices ? indices[k] : k);
      this.got.push({ pair, dst: hex(f.subarray(12, 18)), src: hex(f.subarray(18, 24)) });
    }
  }
  rxReady(): boolean { return true; }
}

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
const mac = (n: number) => [2, 0, 0, 0, 0, n];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

function frame(dst: number[], src: number[]): Uint8Array {
  const f = new Uint8Array(12 + 60);
  f.set(dst, 12);
  f.set(src, 18);
  return f;
}

t.test('MAC table learns, ages, bounds itself', async (t) => {
  const tab = new MacTable(1000, 2);
  tab.learn(1, 0, 0);
  t.equal(tab.lookup(1, 500), 0);
  t.equal(tab.lookup(1, 1500), -1, 'aged out');
  tab.learn(1, 0, 2000);
  tab.learn(2, 1, 2000);
  tab.learn(3, 1, 2000);
  t.equal(tab.overflows, 1, 'full table refuses a third MAC');
  t.equal(tab.lookup(3, 2000), -1);
  tab.learn(1, 1, 2100);
  t.equal(tab.moves, 1, 'move counted');
  t.equal(tab.lookup(1, 2100), 1);
  tab.forgetPort(1);
  t.equal(tab.size, 0);
  tab.learn(9, 0, 0);
  t.equal(tab.sweep(5000), 1);
});

t.test('switch floods unknown/broadcast, learns, then forwards unicast', async (t) => {
  let now = 0;
  const sw = new SwitchBackend({ now: () => now, macAgeMs: 10_000 });
  const sinks = [new RecordingSink('a'), new RecordingSink('b'), new RecordingSink('c')];
  const ports = sinks.map((s) => sw.connect(s));
  const batch = new FrameBatch(8, sw.slotSize);

  batch.push(frame(BCAST, mac(1)));
  ports[0].transmit(0, batch);
  t.same(sinks.map((s) => s.got.length), [0, 1, 1], 'broadcast flooded to all but the sender');
  t.equal(sw.counters.flooded, 1);

  batch.clear();
  batch.push(frame(mac(1), mac(2)));
  ports[1].transmit(0, batch);
  t.same(sinks.map((s) => s.got.length), [1, 1, 1], 'learned MAC 1 on port a: unicast only to a');
  t.equal(sinks[0].got[0].src, '02:00:00:00:00:02');
  t.equal(sw.counters.unicast, 1);

  batch.clear();
  batch.push(frame(mac(2), mac(1)));
  batch.push(frame(mac(7), mac(1)));
  batch.push(frame(mac(1), mac(1)));
  ports[0].transmit(0, batch);
  t.same(sinks.map((s) => s.got.length), [1, 3, 2], 'known → b; unknown 7 flooded to b and c; hairpin dropped');
  t.equal(sw.counters.hairpinDropped, 1);

  now = 20_000;
  batch.clear();
  batch.push(frame(mac(2), mac(3)));
  ports[2].transmit(0, batch);
  t.same(sinks.map((s) => s.got.length), [2, 4, 2], 'MAC 2 aged out → flooded again');

  ports[1].close();
  t.equal(sw.portCount, 2);
  batch.clear();
  batch.push(frame(BCAST, mac(1)));
  ports[0].transmit(0, batch);
  t.same(sinks.map((s) => s.got.length), [2, 4, 3], 'closed port gets nothing');
  const d = sw.connect(new RecordingSink('d'));
  t.ok(d, 'slot reused');
  t.equal(sw.portCount, 3);
});

t.test('switch keeps the pair index modulo the receiver pairs', async (t) => {
  const sw = new SwitchBackend();
  const a = new RecordingSink('a');
  const b = new RecordingSink('b');
  b.activePairs = 2;
  const pa = sw.connect(a);
  sw.connect(b);
  const batch = new FrameBatch(4, sw.slotSize);
  batch.push(frame(BCAST, mac(1)));
  pa.transmit(3, batch);
  t.equal(b.got[0].pair, 1);
});
