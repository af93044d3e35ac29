import { vuSocket } from '../src/targets/vu-socket.js';
import { registerTarget } from './register.js';

registerTarget(vuSocket);
