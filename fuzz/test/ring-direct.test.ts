import { ringDirect } from '../src/targets/ring-corrupt.js';
import { registerTarget } from './register.js';

registerTarget(ringDirect);
