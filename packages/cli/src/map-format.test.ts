import { ExtentList } from '@nbd/server';
import { describe, expect, test } from 'vitest';
import { describeType, formatG, mapJson, mapRuns, mapText, totalsJson, totalsText } from './map-format.js';

const plain = (_s: unknown, t: string) => t;

describe('map runs', () => {
  test('neighbours of one type merge, across block-status calls', () => {
    const list = new ExtentList(0, 20992);
    for (const [len, type] of [
      [4096, 0],
      [4096, 0],
      [8192, 3],
      [4096, 3],
      [512, 0],
    ] as const)
      list.push(len, type);
    const m = { runs: mapRuns(list.extents) };
    expect(m.runs).toEqual([
      { offset: 0, length: 8192, type: 0 },
      { offset: 8192, length: 12288, type: 3 },
      { offset: 20480, length: 512, type: 0 },
    ]);
    expect(list.wanted).toBe(false);
    expect(mapText('base:allocation', m.runs, plain)).toBe(
      '         0        8192    0  data\n      8192       12288    3  hole,zero\n     20480         512    0  data\n',
    );
    expect(JSON.parse(mapJson('base:allocation', m.runs))).toEqual([
      { offset: 0, length: 8192, type: 0, description: 'data' },
      { offset: 8192, length: 12288, type: 3, description: 'hole,zero' },
      { offset: 20480, length: 512, type: 0, description: 'data' },
    ]);
  });

  test('totals per type, ascending, with percentages', () => {
    const m = {
      runs: mapRuns([
        { length: 1, flags: 3 },
        { length: 2, flags: 0 },
      ]),
    };
    expect(totalsText('base:allocation', m.runs, 3, plain)).toBe('         2  66.7%   0 data\n         1  33.3%   3 hole,zero\n');
    expect(JSON.parse(totalsJson('base:allocation', m.runs, 3))).toEqual([
      { size: 2, percent: 66.6667, type: 0, description: 'data' },
      { size: 1, percent: 33.3333, type: 3, description: 'hole,zero' },
    ]);
    expect(totalsJson('base:allocation', [], 0)).toBe('[]\n');
  });

  test('descriptions per context, none for unknown ones', () => {
    expect(describeType('qemu:dirty-bitmap:b0', 1)).toBe('dirty');
    expect(describeType('qemu:allocation-depth', 3)).toBe('backing depth 3');
    expect(describeType('x:y', 0)).toBeUndefined();
    expect(mapJson('x:y', [{ offset: 0, length: 1, type: 7 }])).toBe('[\n{ "offset": 0, "length": 1, "type": 7}\n]\n');
  });

  test("formatG is C's %g", () => {
    expect([100, 50, 33.33333333, 0.5, 1e-5, 1234567, 0.0001, 99.99999].map(formatG)).toEqual([
      '100',
      '50',
      '33.3333',
      '0.5',
      '1e-05',
      '1.23457e+06',
      '0.0001',
      '100',
    ]);
  });
});
