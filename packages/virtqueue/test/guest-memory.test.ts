import fc from 'fast-check';
import t from 'tap';
import {
  FAULT_ADDR_RANGE, FAULT_DISCONTIGUOUS, FAULT_GAP, FAULT_TOO_MANY_SEGMENTS, FAULT_UNMAPPED,
  GuestMemory, GuestMemoryError, SLAB_MAX, type MemoryRegion,
} from '@vhost-ts/virtqueue';

function region(gpa: number, size: number, uva: number, pad = 0): MemoryRegion {
  return { guestPhysAddr: gpa, size, userAddr: uva, mmapOffset: 0, buffer: new ArrayBuffer(size + pad), bufferOffset: pad };
}

// Two regions adjacent in GPA (0x1000..0x3000, 0x3000..0x4000), a gap, a third at 0x10000.
// UVAs: A and B are adjacent in UVA too; C's UVA directly follows B's but its GPA does not.
const mk = () => new GuestMemory([
  region(0x3000, 0x1000, 0x7000_0000_2000),
  region(0x1000, 0x2000, 0x7000_0000_0000, 8),
  region(0x10000, 0x1000, 0x7000_0000_3000),
]);

t.test('translation inside one region, at its ends', async (t) => {
  const m = mk();
  t.equal(m.slabCount, 3);
  t.same(m.translate(0x1000, 16), [{ slab: 0, offset: 0, len: 16, gpa: 0x1000 }]);
  t.same(m.translate(0x2ff0, 16), [{ slab: 0, offset: 0x1ff0, len: 16, gpa: 0x2ff0 }], 'last 16 bytes of A');
  t.same(m.translate(0x10fff, 1), [{ slab: 2, offset: 0xfff, len: 1, gpa: 0x10fff }], 'last byte of C');
  t.equal(m.gpaToSlab(0x10fff, 2), FAULT_GAP, 'one byte past the end of C runs into unmapped space');
  t.equal(m.gpaToSlab(0x11000, 1), FAULT_UNMAPPED, 'first byte after C');
  t.equal(m.gpaToSlab(0xfff, 1), FAULT_UNMAPPED, 'byte before A');
  t.equal(m.gpaToSlab(0x1000, 0), 0, 'empty range at a mapped address');
});

t.test('a range spanning two adjacent regions yields two segments', async (t) => {
  const m = mk();
  t.same(m.translate(0x2ff8, 16), [
    { slab: 0, offset: 0x1ff8, len: 8, gpa: 0x2ff8 },
    { slab: 1, offset: 0, len: 8, gpa: 0x3000 },
  ]);
  t.equal(m.gpaToSlab(0x2ff8, 16), 0);
  t.equal(m.lastLen, 8, 'lastLen = bytes in the first slab');
  t.equal(m.gpaToSlab(0x1000, 0x3000), 0, 'all of A and B');
  t.equal(m.gpaToSlab(0x1000, 0x3001), FAULT_GAP, 'A + B + one byte of the gap');
  const s = new Int32Array(1), o = new Float64Array(1), l = new Float64Array(1), g = new Float64Array(1);
  t.equal(m.gpaSegments(0x2ff8, 16, s, o, l, g, 0, 1), FAULT_TOO_MANY_SEGMENTS, 'room for one segment only');
});

t.test('addresses ≥ 2^53, negative, fractional and overflowing ends are rejected', async (t) => {
  const m = mk();
  t.equal(m.gpaToSlab(2 ** 53, 1), FAULT_ADDR_RANGE);
  t.equal(m.gpaToSlab(2 ** 53 - 1, 1), FAULT_ADDR_RANGE, 'end = 2^53');
  t.equal(m.gpaToSlab(0x1000, 2 ** 53), FAULT_ADDR_RANGE, 'huge length');
  t.equal(m.gpaToSlab(-1, 1), FAULT_ADDR_RANGE);
  t.equal(m.gpaToSlab(4096.5, 1), FAULT_ADDR_RANGE);
  t.equal(m.gpaToSlab(NaN, 1), FAULT_ADDR_RANGE);
  t.equal(m.gpaToSlab(0x1000, -1), FAULT_ADDR_RANGE);
  t.equal(m.uvaToGpa(2 ** 60, 1), FAULT_ADDR_RANGE);
  t.equal(m.getU64(0x1000), 0);
  t.equal(m.setU64(0x1000, 2 ** 53), FAULT_ADDR_RANGE, 'values ≥ 2^53 are not stored');
  m.setU32(0x1004, 0x200000);
  t.equal(m.getU64(0x1000), FAULT_ADDR_RANGE, 'a stored u64 ≥ 2^53 reads as a fault');
  t.throws(() => m.translate(2 ** 53, 1), GuestMemoryError);
  t.throws(() => m.translate(2 ** 53, 1), { code: 'address-out-of-range' });
});

t.test('UVA translation', async (t) => {
  const m = mk();
  t.equal(m.uvaToGpa(0x7000_0000_0010, 16), 0x1010);
  t.equal(m.uvaToGpa(0x7000_0000_1ff8, 16), 0x2ff8, 'A → B is contiguous in both spaces');
  t.same(m.translateUva(0x7000_0000_1ff8, 16).map((s) => s.len), [8, 8]);
  t.equal(m.uvaToGpa(0x7000_0000_2ff8, 16), FAULT_DISCONTIGUOUS, 'B → C adjacent in UVA only');
  t.equal(m.uvaToGpa(0x7000_0000_3ff8, 16), FAULT_GAP);
  t.equal(m.uvaToGpa(0x6fff_ffff_ffff, 1), FAULT_UNMAPPED);
  t.throws(() => m.translateUva(0x1000, 1), { code: 'unmapped' }, 'a GPA is not a UVA');
});

t.test('construction rejects bad tables', async (t) => {
  t.throws(() => new GuestMemory([region(0x1000, 0x1000, 0), region(0x1800, 0x1000, 0x10000)]), { code: 'overlap' });
  t.throws(() => new GuestMemory([region(0x1000, 0x1000, 0), region(0x8000, 0x1000, 0x800)]), { code: 'overlap' }, 'UVA overlap');
  t.throws(() => new GuestMemory([{ ...region(0, 16, 0), size: 0 }]), { code: 'invalid-region' });
  t.throws(() => new GuestMemory([{ ...region(0, 16, 0), size: 32 }]), { code: 'invalid-region' }, 'buffer too small');
  t.throws(() => new GuestMemory([region(2 ** 53 - 8, 16, 0)]), { code: 'invalid-region' });
  t.equal(new GuestMemory([]).slabCount, 0, 'an empty table is valid (before SET_MEM_TABLE)');
  t.equal(new GuestMemory([]).gpaToSlab(0, 1), FAULT_UNMAPPED);
});

t.test('each instance has a unique generation', async (t) => {
  const a = mk(), b = mk();
  t.not(a.generation, b.generation);
  t.ok(b.generation > a.generation);
});

t.test('regions larger than 1 GiB are split into slabs', async (t) => {
  // A 1 GiB + 8 KiB region: needs a real buffer that big; skip if the allocation fails.
  let buf: ArrayBuffer;
  try { buf = new ArrayBuffer(SLAB_MAX + 0x2000); } catch { t.skip('cannot allocate 1 GiB'); return; }
  const m = new GuestMemory([{ guestPhysAddr: 0x100000, size: SLAB_MAX + 0x2000, userAddr: 0, mmapOffset: 0, buffer: buf, bufferOffset: 0 }]);
  t.equal(m.slabCount, 2);
  t.equal(m.slabs[0].length, SLAB_MAX);
  t.equal(m.slabs[1].length, 0x2000);
  t.equal(m.slabGpa[1], 0x100000 + SLAB_MAX);
  const segs = m.translate(0x100000 + SLAB_MAX - 4, 8);
  t.same(segs.map((s) => [s.slab, s.len]), [[0, 4], [1, 4]], 'a range across the slab boundary is two segments');
  t.equal(m.slabByteOffset[1], SLAB_MAX);
  m.setU32(0x100000 + SLAB_MAX - 2, 0xdeadbeef);
  t.equal(m.getU32(0x100000 + SLAB_MAX - 2), 0xdeadbeef, 'u32 straddling two slabs');
});

t.test('read/write helpers split across regions and fault cleanly', async (t) => {
  const m = mk();
  const src = Uint8Array.from({ length: 200 }, (_, i) => i);
  t.equal(m.writeFrom(0x2f9c, src), 200, 'large copy across A/B');
  const dst = new Uint8Array(200);
  t.equal(m.readInto(0x2f9c, dst), 200);
  t.same(dst, src);
  t.equal(m.setU16(0x2fff, 0xabcd), 0, 'u16 across A/B');
  t.equal(m.getU16(0x2fff), 0xabcd);
  t.equal(m.getU8(0x3000), 0xab);
  t.equal(m.writeFrom(0x3ff0, src), FAULT_GAP, 'write running into the gap');
  t.equal(m.getU8(0x3ff0), 0, 'nothing was written by the faulting write');
  t.equal(m.getU32(0x5000), FAULT_UNMAPPED);
  t.equal(m.setU8(0x10000, 7), 0);
  t.equal(m.getU8(0x10000), 7);
});

t.test('dirty log: 1 bit per 4 KiB page, bit = gpa / 4096 (VHOST_F_LOG_ALL)', async (t) => {
  const m = mk();
  const log = new Uint8Array(4);
  m.markDirty(0x1000, 1);
  t.same([...log], [0, 0, 0, 0], 'no-op while logging is off');
  m.setDirtyLog(log);
  m.markDirty(0x1fff, 2);            // pages 1 and 2
  t.equal(log[0], 0b110);
  m.writeFrom(0x10000, new Uint8Array(1)); // page 16
  t.equal(log[2], 0b1);
  m.setU16(0x2fff, 1);                // pages 2 and 3
  t.equal(log[0], 0b1110);
  m.markDirty(0x1000, 0);
  m.markDirty(0x100000, 4096);        // page 256: beyond the 32-bit bitmap
  t.equal(m.dirtyLogOverflow, 1, 'pages beyond the bitmap are counted, not written');
  t.same([...log], [0b1110, 0, 1, 0]);
  t.equal(m.dirtyPagesMarked, 5, 'dirtyPagesMarked counts every bit set (pages 1, 2, 16, 2, 3)');
  m.setDirtyLog(null);
  m.markDirty(0x3000, 1);
  t.equal(log[0], 0b1110, 'off again');
  t.equal(m.dirtyPagesMarked, 5, 'nothing counted while logging is off');
});

t.test('overlap check (neighbours after sorting) agrees with a pair-wise check on random tables', async (t) => {
  const shared = new ArrayBuffer(0x10000);
  const regionArb = fc.record({ gpa: fc.nat({ max: 64 }), uva: fc.nat({ max: 64 }), size: fc.integer({ min: 1, max: 8 }) });
  fc.assert(fc.property(fc.array(regionArb, { minLength: 0, maxLength: 12 }), (rs) => {
    const regions: MemoryRegion[] = rs.map((r) => ({
      guestPhysAddr: r.gpa * 0x1000, size: r.size * 0x1000, userAddr: r.uva * 0x1000, mmapOffset: 0, buffer: shared, bufferOffset: 0,
    }));
    let pairwise = false;
    for (let i = 0; i < regions.length; i++) {
      for (let j = i + 1; j < regions.length; j++) {
        const a = regions[i], b = regions[j];
        if ((a.guestPhysAddr < b.guestPhysAddr + b.size && b.guestPhysAddr < a.guestPhysAddr + a.size)
          || (a.userAddr < b.userAddr + b.size && b.userAddr < a.userAddr + a.size)) pairwise = true;
      }
    }
    let refused = false;
    try { new GuestMemory(regions); } catch (e) { refused = (e as GuestMemoryError).code === 'overlap'; }
    return refused === pairwise;
  }), { numRuns: 3000, seed: 20261206 });
  t.pass('3000 random tables');
});
