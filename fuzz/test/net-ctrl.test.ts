import { netCtrl } from '../src/targets/net-ctrl.js';
import { registerTarget } from './register.js';

registerTarget(netCtrl);
