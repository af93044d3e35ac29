// A hostile guest may reuse descriptor heads without waiting for the used ring. Requests the
// queue answers at once (here: an unknown type, UNSUPP) free their slot again, so without a
// bound one kick could keep the queue busy forever and starve every other queue and the
// vhost-user socket sharing the event loop.
import t from 'tap';
import { setImmediate as turn } from 'node:timers/promises';
import { MemoryImage, VIRTIO_BLK_S_UNSUPP } from '../src/index.js';
import { BlkRig } from './helpers.js';

t.test('a guest that republishes requests forever cannot hold the event loop', async (t) => {
  const image = new MemoryImage(new Uint8Array(1 << 20));
  const r = new BlkRig({ image, serial: 'hostile' }, { queueSize: 64 });
  let hostile = true;
  let answered = 0;
  let badStatus = 0;
  const reAdd = (n: number): void => {
    for (let i = 0; i < n; i++) r.add({ type: 99 });
    r.guest.driver.publish();
  };
  // On every notification the guest takes its answers back and queues as many new requests.
  r.ctx.notify = () => {
    r.notifies++;
    const used = r.collect();
    answered += used.size;
    if (hostile) reAdd(used.size);
  };
  reAdd(32); // two descriptors a request: 32 fill the 64-entry ring
  r.handler.onKick(); // must return
  const inOneCall = answered;
  t.ok(inOneCall >= 32 && inOneCall <= 5 * 64, `one kick answered ${inOneCall} requests (bounded)`);
  await turn();
  t.ok(answered > inOneCall, 'the queue resumes on a later turn of the event loop');
  hostile = false;
  for (let i = 0; i < 20; i++) await turn();
  answered += r.collect().size;
  t.same(r.brokenReasons, [], 'the device is not broken');
  // Spot-check an answer: the last request added got UNSUPP.
  const s = r.add({ type: 99 });
  r.kick();
  if (r.status(s) !== VIRTIO_BLK_S_UNSUPP) badStatus++;
  t.equal(badStatus, 0, 'requests still answered UNSUPP');
  await r.handler.stop();
});
