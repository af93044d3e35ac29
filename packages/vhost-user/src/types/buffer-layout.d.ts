// Minimal typings for the parts of `buffer-layout` (1.2.x, CommonJS, untyped) used by the codec.
declare module 'buffer-layout' {
  export class Layout<T = unknown> {
    constructor(span: number, property?: string);
    readonly span: number;
    readonly property: string | undefined;
    decode(b: Buffer, offset?: number): T;
    encode(src: T, b: Buffer, offset?: number): number;
    getSpan(b?: Buffer, offset?: number): number;
  }
  export class Structure<T = Record<string, unknown>> extends Layout<T> {
    readonly fields: Layout[];
  }
  export function struct<T = Record<string, unknown>>(fields: Layout<any>[], property?: string): Structure<T>;
  export function seq<T>(element: Layout<T>, count: number, property?: string): Layout<T[]>;
  export function blob(length: number, property?: string): Layout<Buffer>;
  export function u8(property?: string): Layout<number>;
  export function u16(property?: string): Layout<number>;
  export function u32(property?: string): Layout<number>;
  export function nu64(property?: string): Layout<number>;
}
