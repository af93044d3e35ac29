import t from 'tap';
import {
  checkTxHeader, readNetHeader, writeNetHeader, setNumBuffers, getNumBuffers, clearNetHeader,
  NO_OFFLOADS, TX_HDR_OK, TX_HDR_RUNT, TX_HDR_BAD_CSUM, TX_HDR_BAD_GSO,
} from '../src/net-header.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_ECN } from '../src/constants.js';

const ALL = { csum: true, tso4: true, tso6: true, ecn: true, ufo: false };

t.test('virtio_net_hdr_v1 round trip, little-endian layout (virtio 1.2 §5.1.6)', async (t) => {
  const b = new Uint8Array(16).fill(0xee);
  writeNetHeader(b, 2, { flags: 1, gsoType: 4, hdrLen: 0x0102, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 3 });
  t.same([...b.subarray(2, 14)], [1, 4, 0x02, 0x01, 1448 & 0xff, 1448 >> 8, 34, 0, 16, 0, 3, 0]);
  t.equal(b[0], 0xee, 'bytes before untouched');
  t.equal(b[14], 0xee, 'bytes after untouched');
  t.same(readNetHeader(b, 2), { flags: 1, gsoType: 4, hdrLen: 0x0102, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 3 });
  setNumBuffers(b, 2, 0x1234);
  t.equal(getNumBuffers(b, 2), 0x1234);
  clearNetHeader(b, 2);
  t.same([...b.subarray(2, 14)], new Array(12).fill(0));
});

t.test('TX header checks (virtio 1.2 §5.1.6.2)', async (t) => {
  const b = new Uint8Array(12);
  t.equal(checkTxHeader(b, 0, 60, NO_OFFLOADS), TX_HDR_OK, 'plain frame');
  t.equal(checkTxHeader(b, 0, 13, NO_OFFLOADS), TX_HDR_RUNT, 'shorter than an Ethernet header');
  writeNetHeader(b, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 16 });
  t.equal(checkTxHeader(b, 0, 60, NO_OFFLOADS), TX_HDR_BAD_CSUM, 'NEEDS_CSUM without VIRTIO_NET_F_CSUM');
  t.equal(checkTxHeader(b, 0, 60, ALL), TX_HDR_OK, 'NEEDS_CSUM with CSUM');
  t.equal(checkTxHeader(b, 0, 51, ALL), TX_HDR_BAD_CSUM, 'checksum field past the frame end');
  t.equal(checkTxHeader(b, 0, 52, ALL), TX_HDR_OK, 'checksum field ends exactly at the frame end');
  writeNetHeader(b, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16 });
  t.equal(checkTxHeader(b, 0, 9000, ALL), TX_HDR_OK, 'TSO4 negotiated');
  t.equal(checkTxHeader(b, 0, 9000, { ...ALL, tso4: false }), TX_HDR_BAD_GSO, 'TSO4 not negotiated');
  b[1] = VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN;
  t.equal(checkTxHeader(b, 0, 9000, ALL), TX_HDR_OK, 'TSO6+ECN negotiated');
  t.equal(checkTxHeader(b, 0, 9000, { ...ALL, ecn: false }), TX_HDR_BAD_GSO, 'ECN not negotiated');
  b[1] = 77;
  t.equal(checkTxHeader(b, 0, 9000, ALL), TX_HDR_BAD_GSO, 'unknown gso_type');
  writeNetHeader(b, 0, { gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1448 });
  t.equal(checkTxHeader(b, 0, 9000, ALL), TX_HDR_BAD_GSO, 'GSO without NEEDS_CSUM');
  writeNetHeader(b, 0, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 0, csumStart: 34, csumOffset: 16 });
  t.equal(checkTxHeader(b, 0, 9000, ALL), TX_HDR_BAD_GSO, 'gso_size 0');
});
