import { netPath } from '../src/targets/net-path.js';
import { registerTarget } from './register.js';

registerTarget(netPath);
