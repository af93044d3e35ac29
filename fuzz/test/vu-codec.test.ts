import { vuCodec } from '../src/targets/vu-codec.js';
import { registerTarget } from './register.js';

registerTarget(vuCodec);
