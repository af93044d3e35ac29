import { packedModel } from '../src/targets/packed-model.js';
import { registerTarget } from './register.js';

registerTarget(packedModel);
