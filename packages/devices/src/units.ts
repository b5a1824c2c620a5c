// Ranges cut at the edges of fixed-size units (pages, blocks): the walk every device
// over paged or blocked storage does.

/**
 * Calls `f(unit, inUnit, n, pos)` for each unit of `unitSize` bytes that the `length`
 * bytes at `offset` touch, in order: the unit's index, where the range starts in it, how
 * many of the range's bytes it holds, and where they start in the range.
 */
export function eachUnit(
  offset: number,
  length: number,
  unitSize: number,
  f: (unit: number, inUnit: number, n: number, pos: number) => void,
): void {
  for (let pos = 0; pos < length; ) {
    const at = offset + pos;
    const inUnit = at % unitSize;
    const n = Math.min(unitSize - inUnit, length - pos);
    f(Math.floor(at / unitSize), inUnit, n, pos);
    pos += n;
  }
}
