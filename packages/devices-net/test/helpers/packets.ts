// Builds and parses the few IPv4/ICMP frames the interop tests need.

export function ipChecksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function parseMacText(s: string): number[] {
  return s.split(':').map((x) => parseInt(x, 16));
}

const ip4 = (s: string) => s.split('.').map(Number);

/** 12-byte zero virtio header + Ethernet + IPv4 + ICMP echo request. */
export function icmpEchoRequest(dstMac: number[], srcMac: number[], srcIp: string, dstIp: string, id: number, seq: number): Uint8Array {
  const payload = 32;
  const f = new Uint8Array(12 + 14 + 20 + 8 + payload);
  const e = 12;
  f.set(dstMac, e);
  f.set(srcMac, e + 6);
  f[e + 12] = 0x08; f[e + 13] = 0x00;
  const ip = e + 14;
  f[ip] = 0x45; f[ip + 1] = 0;
  const total = 20 + 8 + payload;
  f[ip + 2] = total >> 8; f[ip + 3] = total & 0xff;
  f[ip + 4] = id >> 8; f[ip + 5] = id & 0xff;
  f[ip + 6] = 0x40; // DF
  f[ip + 8] = 64; f[ip + 9] = 1; // ttl, ICMP
  f.set(ip4(srcIp), ip + 12);
  f.set(ip4(dstIp), ip + 16);
  const c = ipChecksum(f, ip, 20);
  f[ip + 10] = c >> 8; f[ip + 11] = c & 0xff;
  const icmp = ip + 20;
  f[icmp] = 8; f[icmp + 1] = 0;
  f[icmp + 4] = id >> 8; f[icmp + 5] = id & 0xff;
  f[icmp + 6] = seq >> 8; f[icmp + 7] = seq & 0xff;
  for (let i = 0; i < payload; i++) f[icmp + 8 + i] = i;
  const ic = ipChecksum(f, icmp, 8 + payload);
  f[icmp + 2] = ic >> 8; f[icmp + 3] = ic & 0xff;
  return f;
}

/** True when `frame` (with 12-byte header) is an ICMP echo reply with this id/seq from `fromIp`. */
export function isEchoReply(frame: Uint8Array, fromIp: string, id: number, seq: number): boolean {
  const e = 12;
  if (frame.length < e + 14 + 20 + 8) return false;
  if (frame[e + 12] !== 0x08 || frame[e + 13] !== 0x00) return false;
  const ip = e + 14;
  const ihl = (frame[ip] & 0x0f) * 4;
  if (frame[ip + 9] !== 1) return false;
  if (frame.subarray(ip + 12, ip + 16).join('.') !== fromIp) return false;
  const icmp = ip + ihl;
  return frame[icmp] === 0 && ((frame[icmp + 4] << 8) | frame[icmp + 5]) === id && ((frame[icmp + 6] << 8) | frame[icmp + 7]) === seq;
}
