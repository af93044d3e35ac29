// The allocation-free copies of the frame path (word-copy.ts) and the 8-aligned slot stride of
// FrameBatch/FrameRing: byte-exact results against a reference copy for every alignment and
// length class, nothing outside the target range touched, and chain copies through guest
// regions that sit at odd offsets in their buffers (the byte / set fallbacks) equal to aligned ones.
import t from 'tap';
import { DescriptorChain } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import { copyFromChain, copyToChain } from '../src/chain-copy.js';
import { FrameBatch, FrameRing, slotStride } from '../src/frame-batch.js';
import { copyFast, wordsOf } from '../src/word-copy.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

t.test('copyFast equals a byte copy for every offset mod 4 and lengths across the three paths', async (t) => {
  const src = pattern(4096, 7);
  const src32 = wordsOf(src.buffer);
  let cases = 0;
  let bad = 0;
  for (const len of [0, 1, 7, 8, 9, 12, 13, 64, 76, 255, 256, 511, 512, 513, 1518, 1530]) {
    for (let so = 0; so < 4; so++) {
      for (let d = 0; d < 4; d++) {
        const dst = new Uint8Array(2048).fill(0xee);
        const dst32 = wordsOf(dst.buffer);
        const dOff = 100 + d;
        const sOff = 200 + so;
        copyFast(dst, dst32, dOff, src, src32, sOff, len);
        cases++;
        for (let i = 0; i < dst.length; i++) {
          const want = i >= dOff && i < dOff + len ? src[sOff + i - dOff] : 0xee;
          if (dst[i] !== want) { bad++; break; }
        }
      }
    }
  }
  t.equal(bad, 0, `${cases} cases byte-exact, bytes outside [off, off+len) untouched`);
});

t.test('copyFast on views with a byteOffset uses absolute alignment', async (t) => {
  const big = new Uint8Array(4096);
  const dst = big.subarray(3, 1003); // byteOffset 3: dOff 1 is word-aligned in the buffer
  const src = pattern(600, 3);
  copyFast(dst, wordsOf(big.buffer), 1, src, wordsOf(src.buffer), 0, 500);
  t.same(dst.subarray(1, 501), src.subarray(0, 500));
  t.equal(big[3], 0, 'byte before untouched');
  t.equal(big[3 + 501], 0, 'byte after untouched');
});

t.test('FrameBatch/FrameRing slots start on 8-byte boundaries and hold slotSize bytes', async (t) => {
  for (const size of [13, 76, 1530, 1536, 65550]) {
    const b = new FrameBatch(3, size);
    t.equal(b.stride, slotStride(size));
    t.ok(b.stride >= size && b.stride % 8 === 0 && b.stride - size < 8, `stride ${b.stride} for ${size}`);
    t.equal(b.offsetOf(2), 2 * b.stride);
    t.equal(b.views[1].byteOffset, b.stride);
    t.equal(b.views[1].length, size, 'a slot view covers slotSize bytes');
    t.ok(b.push(pattern(size, 1)) && b.push(pattern(size, 2)), 'full-size frames fit');
    t.same(b.frame(1), pattern(size, 2));
    const r = new FrameRing(2, size);
    t.ok(r.pushFrom(b, 1));
    t.same(r.data.subarray(r.frontOffset, r.frontOffset + r.frontLength), pattern(size, 2));
  }
});

t.test('chain copies with and without word views agree, aligned and misaligned guest regions', async (t) => {
  for (const misalign of [0, 1, 2, 3]) {
    const guest = new MockGuest({
      queueSize: 16,
      // Region 0 holds the rings (which must be aligned); the buffers live in 1 and 2.
      regions: [{ gpa: 0x10000, size: 0x100000 }, { gpa: 0x200000, size: 0x10000, misalign },
        { gpa: 0x300000, size: 0x10000, misalign: (misalign + 2) & 3 }],
    });
    const frame = pattern(1530, misalign);
    // Spread over three descriptors: odd lengths so later pieces start unaligned.
    const lens = [13, 700, 817];
    const gpas = lens.map((l, i) => guest.alloc(l, { align: i === 1 ? 1 : 16, region: i === 2 ? 2 : 1 }));
    let o = 0;
    gpas.forEach((g, i) => { guest.write(g, frame.subarray(o, o + lens[i])); o += lens[i]; });
    guest.driver.addChain(gpas, lens, 3, 3);
    guest.driver.publish();
    const chain = new DescriptorChain();
    t.equal(guest.device.pop(chain), 1);
    const batch = new FrameBatch(2, 1536);
    copyFromChain(chain, 0, batch.data, batch.offsetOf(1), 1530, batch.data32);
    t.same(batch.data.subarray(batch.offsetOf(1), batch.offsetOf(1) + 1530), frame, `copyFromChain word path, misalign ${misalign}`);
    const plain = new Uint8Array(1600);
    copyFromChain(chain, 5, plain, 3, 1400);
    t.same(plain.subarray(3, 1403), frame.subarray(5, 1405), 'old path, skip + offset');
    const viaWords = new Uint8Array(1600);
    copyFromChain(chain, 5, viaWords, 3, 1400, wordsOf(viaWords.buffer));
    t.same(viaWords, plain, 'word path = old path with skip + offset');

    // RX direction: writable buffers.
    const wl = [12, 64, 100];
    const wg = wl.map((l, i) => guest.alloc(l, { align: i === 1 ? 2 : 16, region: i === 2 ? 2 : 1 }));
    guest.driver.addChain(wg, wl, 3, 0);
    guest.driver.publish();
    t.equal(guest.device.pop(chain), 1);
    const out = pattern(176, 9);
    t.equal(copyToChain(chain, 0, out, 0, 176, wordsOf(out.buffer)), 176, 'all 176 bytes written');
    const back = new Uint8Array(176);
    let p = 0;
    wg.forEach((g, i) => { back.set(guest.read(g, wl[i]), p); p += wl[i]; });
    t.same(back, out, 'guest buffers hold the bytes');
    t.equal(copyToChain(chain, 170, out, 0, 100, wordsOf(out.buffer)), 6, 'short when the chain ends');
    guest.assertCanaries();
  }
});

t.test('RX single-descriptor fast path: bytes, used length, dirty pages when logging', async (t) => {
  const { NetRig, makeFrame } = await import('./helpers/net-rig.js');
  const { LoopbackBackend } = await import('../src/loopback-backend.js');
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  const rx = rig.q(0).guest;
  const log = rx.enableDirtyLog();
  rig.postRx(2, 2048);
  const f = makeFrame([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xa], 333);
  f[12 + 100] = 0x77;
  rig.send(f);
  const got = rig.rxUsed();
  t.equal(got.length, 1);
  t.equal(got[0].length, 12 + 333, 'used len = header + frame');
  t.same(got[0].subarray(12), f.subarray(12), 'frame bytes');
  t.same([...got[0].subarray(0, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], 'cleared header, num_buffers 1');
  // The buffer's pages are marked (VHOST_F_LOG_ALL: bit = gpa / 4096).
  let marked = 0;
  for (const b of log) for (let k = 0; k < 8; k++) marked += (b >> k) & 1;
  t.ok(marked >= 2, `buffer and used-ring pages marked dirty (${marked} pages)`);
  rx.assertCanaries();
});
