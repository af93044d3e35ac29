import { test as _t } from "tap"; import tap from "tap"; const t = tap;
import * as vq from '@vhost-ts/virtqueue';
const x: number = 3;
t.equal(x + 1, 4);
t.ok(vq);
