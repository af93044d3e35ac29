import { ringModel } from '../src/targets/ring-model.js';
import { registerTarget } from './register.js';

registerTarget(ringModel);
