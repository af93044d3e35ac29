import { blkFile } from '../src/targets/blk-queue.js';
import { registerTarget } from './register.js';

registerTarget(blkFile);
