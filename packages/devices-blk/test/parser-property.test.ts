/**
 * Property: the test picks the expected outcome first, builds a chain that should produce it
 * (random header splits, data splits, indirect or not), and checks the device agrees — status,
 * used length, data, image, canaries.
 */
import fc from 'fast-check';
import t from 'tap';
import {
  MemoryImage, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
} from '../src/index.js';
import { BlkRig, pattern, sameBytes } from './helpers.js';

const CAP = 256; // sectors
const SIZE = CAP * 512;

/** Splits `total` bytes into pieces at the given cut points. */
function splits(total: number, cuts: number[]): number[] {
  const points = [...new Set(cuts.map((c) => c % (total + 1)))].filter((c) => c > 0 && c < total).sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const p of [...points, total]) { out.push(p - prev); prev = p; }
  return out;
}

const reqArb = fc.record({
  kind: fc.constantFrom('in', 'out', 'flush', 'getid', 'unknown'),
  sector: fc.oneof(fc.integer({ min: 0, max: CAP + 4 }), fc.constant(2 ** 40), fc.constant(2 ** 53 - 1)),
  sectors: fc.integer({ min: 0, max: 8 }),
  extra: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 511 })),
  headerCuts: fc.array(fc.integer({ min: 1, max: 15 }), { maxLength: 4 }),
  dataCuts: fc.array(fc.integer({ min: 1, max: 4096 }), { maxLength: 3 }),
  indirect: fc.boolean(),
  idLen: fc.integer({ min: 0, max: 40 }),
  seed: fc.integer({ min: 1, max: 1000 }),
});

t.test('device status and used length agree with the expected outcome', async (t) => {
  let runs = 0;
  fc.assert(fc.property(reqArb, (p) => {
    runs++;
    const base = pattern(SIZE, 77);
    const image = new MemoryImage(base.slice());
    const r = new BlkRig({ image }, { queueSize: 16, heapBytes: 0x10000 });
    const dataLen = p.sectors * 512 + p.extra;
    const inRange = p.sector + p.sectors <= CAP;
    let type: number, expStatus: number, expLen: number;
    let out: Uint8Array | undefined, inLen = 0;
    switch (p.kind) {
      case 'in':
        type = VIRTIO_BLK_T_IN; inLen = dataLen;
        expStatus = p.extra === 0 && inRange ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
        // §2.7.8.2: len = bytes written from the start of the writable part; the status byte
        // counts when it follows them (after a failed read, only when there was no data buffer).
        expLen = expStatus === VIRTIO_BLK_S_OK ? dataLen + 1 : inLen === 0 ? 1 : 0;
        break;
      case 'out':
        type = VIRTIO_BLK_T_OUT; out = pattern(dataLen, p.seed);
        expStatus = p.extra === 0 && inRange ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
        expLen = 1;
        break;
      case 'flush':
        type = VIRTIO_BLK_T_FLUSH; expStatus = VIRTIO_BLK_S_OK; expLen = 1;
        break;
      case 'getid':
        type = VIRTIO_BLK_T_GET_ID; inLen = p.idLen; expStatus = VIRTIO_BLK_S_OK; expLen = p.idLen <= 20 ? p.idLen + 1 : 20;
        break;
      default:
        type = 0x1234; expStatus = VIRTIO_BLK_S_UNSUPP; expLen = 1;
    }
    const inSplit = inLen > 0 ? splits(inLen, p.dataCuts) : undefined;
    const s = r.add({
      type, sector: p.sector, out, inLen, inSplit, headerSplit: splits(16, p.headerCuts), indirect: p.indirect,
    });
    r.kick();
    const used = r.collect();
    if (used.get(s.head) !== expLen) throw new Error(`used len ${used.get(s.head)} != ${expLen} for ${JSON.stringify(p)}`);
    if (r.status(s) !== expStatus) throw new Error(`status ${r.status(s)} != ${expStatus}`);
    if (p.kind === 'in' && expStatus === VIRTIO_BLK_S_OK
      && !sameBytes(r.readIn(s), base.subarray(p.sector * 512, p.sector * 512 + dataLen))) throw new Error('read data differs');
    const expectImage = base.slice();
    if (p.kind === 'out' && expStatus === VIRTIO_BLK_S_OK) expectImage.set(out!, p.sector * 512);
    if (!sameBytes(image.bytes, expectImage)) throw new Error('image differs from the expected one');
    if (r.brokenReasons.length !== 0) throw new Error(`broken: ${r.brokenReasons[0]}`);
    const bad = r.guest.checkCanaries();
    if (bad.length !== 0) throw new Error(bad[0]);
  }), { numRuns: 300 });
  t.equal(runs, 300);
});
