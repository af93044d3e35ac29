/**
 * A fuzz target: a fast-check property plus the defaults the test suite uses.
 * @module
 */
import type fc from 'fast-check';

export interface FuzzTarget {
  /** Stable name (`ring-model` …); regression files refer to it. */
  readonly name: string;
  /** What the property checks. */
  readonly description: string;
  /** Runs the suite does on every `npm test` (a few seconds). */
  readonly testRuns: number;
  /** Builds the property (fresh each time: properties may hold state). Async targets return an async property. */
  property(): fc.IProperty<unknown[]> | fc.IAsyncProperty<unknown[]>;
}
