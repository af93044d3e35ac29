/**
 * Copies between a {@link FrameBatch}-style byte array and a descriptor chain's writable part,
 * at arbitrary offsets on both sides, without building subarray views for small pieces (the
 * chain's own helpers copy from offset 0 of a whole view).
 * @module
 */
import { copyBytes, type DescriptorChain } from '@vhost-ts/virtqueue';
import { copyFast, slabWords } from './word-copy.js';

/**
 * Copies `len` bytes of `src` from `srcOff` into the chain's writable bytes starting `skip`
 * bytes in; marks dirty pages when logging. Returns bytes copied (short when the chain ends).
 * `src32` ({@link wordsOf} `src.buffer`) enables the allocation-free word copy.
 */
export function copyToChain(chain: DescriptorChain, skip: number, src: Uint8Array, srcOff: number, len: number, src32?: Int32Array): number {
  const mem = chain.memory;
  if (mem === null) return 0;
  let done = 0;
  if (src32 !== undefined) {
    const words = slabWords(mem);
    const end = chain.readableSegs + chain.writableSegs;
    for (let i = chain.readableSegs; i < end && done < len; i++) {
      const segLen = chain.segLen[i];
      if (skip >= segLen) { skip -= segLen; continue; }
      const take = Math.min(segLen - skip, len - done);
      const slab = chain.segSlab[i];
      copyFast(mem.slabs[slab], words[slab], chain.segOffset[i] + skip, src, src32, srcOff + done, take);
      if (mem.dirtyLog !== null) mem.markDirty(chain.segGpa[i] + skip, take);
      done += take;
      skip = 0;
    }
    return done;
  }
  const end = chain.readableSegs + chain.writableSegs;
  for (let i = chain.readableSegs; i < end && done < len; i++) {
    const segLen = chain.segLen[i];
    if (skip >= segLen) { skip -= segLen; continue; }
    const take = Math.min(segLen - skip, len - done);
    copyBytes(mem.slabs[chain.segSlab[i]], chain.segOffset[i] + skip, src, srcOff + done, take);
    if (mem.dirtyLog !== null) mem.markDirty(chain.segGpa[i] + skip, take);
    done += take;
    skip = 0;
  }
  return done;
}

/**
 * Copies up to `len` readable bytes, from `skip`, into `dst` at `dstOff`. Returns bytes copied.
 * `dst32` ({@link wordsOf} `dst.buffer`) enables the allocation-free word copy.
 */
export function copyFromChain(chain: DescriptorChain, skip: number, dst: Uint8Array, dstOff: number, len: number, dst32?: Int32Array): number {
  const mem = chain.memory;
  if (mem === null) return 0;
  let done = 0;
  if (dst32 !== undefined) {
    const words = slabWords(mem);
    for (let i = 0; i < chain.readableSegs && done < len; i++) {
      const segLen = chain.segLen[i];
      if (skip >= segLen) { skip -= segLen; continue; }
      const take = Math.min(segLen - skip, len - done);
      const slab = chain.segSlab[i];
      copyFast(dst, dst32, dstOff + done, mem.slabs[slab], words[slab], chain.segOffset[i] + skip, take);
      done += take;
      skip = 0;
    }
    return done;
  }
  for (let i = 0; i < chain.readableSegs && done < len; i++) {
    const segLen = chain.segLen[i];
    if (skip >= segLen) { skip -= segLen; continue; }
    const take = Math.min(segLen - skip, len - done);
    copyBytes(dst, dstOff + done, mem.slabs[chain.segSlab[i]], chain.segOffset[i] + skip, take);
    done += take;
    skip = 0;
  }
  return done;
}

/**
 * Remembers where the first bytes of a chain's writable part live, so a value decided later
 * (num_buffers, after the frame was spread over more chains) can be patched in after the
 * chain object was reused for the next pop.
 */
export class WritablePrefix {
  private readonly slab = new Int32Array(16);
  private readonly offset = new Float64Array(16);
  private readonly len = new Float64Array(16);
  private readonly gpa = new Float64Array(16);
  private count = 0;

  /** Records the segments covering the first `bytes` writable bytes of `chain`. */
  capture(chain: DescriptorChain, bytes: number): void {
    this.count = 0;
    const end = chain.readableSegs + chain.writableSegs;
    for (let i = chain.readableSegs; i < end && bytes > 0 && this.count < 16; i++) {
      const n = this.count++;
      this.slab[n] = chain.segSlab[i];
      this.offset[n] = chain.segOffset[i];
      this.len[n] = chain.segLen[i];
      this.gpa[n] = chain.segGpa[i];
      bytes -= chain.segLen[i];
    }
  }

  /** Writes byte `value` at writable offset `at` (within the captured prefix). */
  writeByte(chain: DescriptorChain, at: number, value: number): void {
    const mem = chain.memory;
    if (mem === null) return;
    for (let i = 0; i < this.count; i++) {
      if (at >= this.len[i]) { at -= this.len[i]; continue; }
      mem.slabs[this.slab[i]][this.offset[i] + at] = value;
      if (mem.dirtyLog !== null) mem.markDirty(this.gpa[i] + at, 1);
      return;
    }
  }
}
