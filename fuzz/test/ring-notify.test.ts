import { ringNotify } from '../src/targets/ring-notify.js';
import { registerTarget } from './register.js';

registerTarget(ringNotify);
