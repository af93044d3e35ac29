/**
 * Registry of fuzz targets. `--target ring` selects every `ring-*` target.
 * @module
 */
import { ringCorrupt, ringDirect } from './ring-corrupt.js';
import { ringModel } from './ring-model.js';
import { ringNotify } from './ring-notify.js';
import type { FuzzTarget } from './target.js';
import { vuCodec } from './vu-codec.js';
import { vuPacked, vuSession } from './vu-session.js';
import { vuSocket } from './vu-socket.js';
import { blkFile, blkQueue } from './blk-queue.js';
import { netPath } from './net-path.js';
import { netCtrl } from './net-ctrl.js';
import { packedCorrupt, packedDirect } from './packed-corrupt.js';
import { packedModel } from './packed-model.js';
import { configSpace } from './config-space.js';

export type { FuzzTarget } from './target.js';

export const TARGETS: readonly FuzzTarget[] = [ringModel, ringCorrupt, ringDirect, ringNotify, vuCodec, vuSession, vuPacked, vuSocket, blkQueue, blkFile, netPath, netCtrl, configSpace, packedModel, packedCorrupt, packedDirect];

/** Targets matching a name, a prefix group (`ring` → ring-model, ring-corrupt, ring-notify), or `all`. */
export function selectTargets(name: string): FuzzTarget[] {
  return TARGETS.filter((t) => name === 'all' || t.name === name || t.name.startsWith(`${name}-`));
}
