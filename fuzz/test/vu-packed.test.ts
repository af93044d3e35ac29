import { vuPacked } from '../src/targets/vu-session.js';
import { registerTarget } from './register.js';

registerTarget(vuPacked);
