import { configSpace } from '../src/targets/config-space.js';
import { registerTarget } from './register.js';

registerTarget(configSpace);
