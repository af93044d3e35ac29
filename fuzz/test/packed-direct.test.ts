import { packedDirect } from '../src/targets/packed-corrupt.js';
import { registerTarget } from './register.js';

registerTarget(packedDirect);
