// Request ids: `req_` and 20 hex digits, the first 12 the time in milliseconds, the last 8 a
// number drawn at random for each millisecond and counted up within it (as UUIDv7 and ULID's
// monotonic mode do). Ids made in one process are unique and increase; ids of two servers
// sharing a database collide only if both draw within a few of each other in the same
// millisecond. Time order is what the store wants: the invocations table's primary key takes
// every new id at its end, so a commit dirties the same few index pages instead of one page
// anywhere in the index per invocation.

import { randomInt } from 'node:crypto';

const SEQ_SPAN = 2 ** 32;
/** A millisecond's first number is below this, leaving as many for the ids after it. */
const SEQ_START_SPAN = 2 ** 31;

export class RequestIds {
  private ms = -1;
  private seq = 0;

  constructor(private readonly clock: () => number = Date.now) {}

  next(): string {
    const now = this.clock();
    if (now > this.ms) {
      this.ms = now;
      this.seq = randomInt(SEQ_START_SPAN);
    } else if (++this.seq >= SEQ_SPAN) {
      // Over four billion ids in one millisecond, or a clock that went back: borrow the next.
      this.ms += 1;
      this.seq = randomInt(SEQ_START_SPAN);
    }
    return `req_${this.ms.toString(16).padStart(12, '0')}${this.seq.toString(16).padStart(8, '0')}`;
  }
}
