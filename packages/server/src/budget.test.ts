// The connection's one budget: each of the four things it counts stops reading on its
// own, and each way they go down calls back.
import { expect, test } from 'vitest';
import { Budget } from './budget.js';

function setup(maxInFlight = 2, maxInFlightBytes = 8 << 20) {
  const arenas = { pinnedBytes: 0 };
  const queue = { writableLength: 0 };
  let changes = 0;
  const budget = new Budget({ maxInFlight, maxInFlightBytes }, arenas, queue, () => changes++);
  return { budget, arenas, queue, changes: () => changes };
}

test('requests, their bytes, pinned arenas and queued replies each stop reading', () => {
  const { budget, arenas, queue } = setup();
  expect(budget.canRead()).toBe(true);
  budget.start(0);
  budget.start(0);
  expect(budget.canRead()).toBe(false); // 2 requests in flight
  budget.finish(0);
  expect(budget.canRead()).toBe(true);
  budget.start(8 << 20);
  expect(budget.canRead()).toBe(false); // 8 MiB in flight
  budget.finish(8 << 20);
  arenas.pinnedBytes = 8 << 20;
  expect(budget.canRead()).toBe(false);
  arenas.pinnedBytes = 0;
  queue.writableLength = 4 << 20; // queued replies stop at 4 MiB, below the byte limit
  expect(budget.canRead()).toBe(false);
  queue.writableLength = 0;
  expect([budget.canRead(), budget.requests, budget.bytes]).toEqual([true, 1, 0]);
});

test('a small byte limit lowers the queued-reply limit with it', () => {
  const { budget, queue } = setup(16, 64 * 1024);
  queue.writableLength = 64 * 1024;
  expect(budget.canRead()).toBe(false);
});

test('an answered request calls back; a written reply only once the queue is below 1 MiB', () => {
  const { budget, queue, changes } = setup();
  budget.start(10);
  expect(changes()).toBe(0);
  budget.finish(10);
  expect(changes()).toBe(1);
  queue.writableLength = 2 << 20;
  budget.written();
  expect(changes()).toBe(1);
  queue.writableLength = (1 << 20) - 1;
  budget.written();
  expect(changes()).toBe(2);
});
