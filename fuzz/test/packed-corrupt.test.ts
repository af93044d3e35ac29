import { packedCorrupt } from '../src/targets/packed-corrupt.js';
import { registerTarget } from './register.js';

registerTarget(packedCorrupt);
