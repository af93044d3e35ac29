import t from 'tap';
import { openFdCount } from '@vhost-ts/sys';
import { replayFixture, startRecordProxy, VhostUserFrontend, type FixtureEntry } from '../src/index.js';
import { pattern, socketPath, startBackend, until } from './helpers.js';

t.test('record a session through the proxy, replay it against a fresh back-end', async (t) => {
  const b1 = startBackend({ numQueues: 2 });
  const proxyPath = socketPath('proxy.sock');
  let done: FixtureEntry[] | null = null;
  const proxy = startRecordProxy(proxyPath, b1.path, (s) => { done = s; });
  const fe = await VhostUserFrontend.connect(proxyPath);
  await fe.negotiate();
  await fe.setupQueue(0, 16);
  t.same(await fe.roundTrip(0, pattern(21)), pattern(21), 'echo through the proxy');
  t.equal(await fe.getVringBase(0), 1);
  fe.close();
  await until(() => done !== null);
  const fixture = done as unknown as FixtureEntry[];
  const names = fixture.filter((e) => e.dir === 'request').map((e) => e.request);
  t.same(names.slice(0, 4), ['VHOST_USER_GET_FEATURES', 'VHOST_USER_GET_PROTOCOL_FEATURES',
    'VHOST_USER_SET_PROTOCOL_FEATURES', 'VHOST_USER_SET_OWNER']);
  const memTable = fixture.find((e) => e.request === 'VHOST_USER_SET_MEM_TABLE' && e.dir === 'request')!;
  t.same(memTable.fds.map((f) => f.kind), ['memfd', 'memfd'], 'memory fds described');
  t.ok(fixture.some((e) => e.request === 'VHOST_USER_SET_VRING_KICK' && e.fds[0]?.kind === 'eventfd'), 'kick eventfd described');
  proxy.close();
  await b1.backend.close();

  const b2 = startBackend({ numQueues: 2 });
  const before = openFdCount();
  const r = await replayFixture(b2.path, JSON.parse(JSON.stringify(fixture)));
  t.notOk(r.closedEarly, 'back-end accepted the whole replay');
  t.same(r.replies.map((x) => x.id), r.expected.map((x) => x.id), 'same reply sequence');
  const feat = r.replies.findIndex((x) => x.id === 1);
  t.equal(r.replies[feat].payload, r.expected[feat].payload, 'same GET_FEATURES answer');
  await until(() => b2.backend.activeSession === null);
  await b2.backend.idle();
  t.equal(openFdCount(), before, 'no fd leaked by the replay');
  await b2.backend.close();
});
