import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { ErrorCode, NbdError } from './errors.js';
import { NbdNodeVersionError, NODE_MAJOR_NEEDED, requireSupportedNode } from './node-version.js';

describe('requireSupportedNode', () => {
  test('Node.js 20 and 21: an NbdNodeVersionError naming both versions', () => {
    for (const node of ['20.19.2', '21.7.3']) {
      let caught: unknown;
      try {
        requireSupportedNode({ versions: { node } });
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(NbdNodeVersionError);
      expect(caught).toBeInstanceOf(NbdError);
      expect(caught).toMatchObject({ code: ErrorCode.NODE_VERSION, running: node });
      expect((caught as Error).message).toBe(`@nbd needs Node.js 22 or newer (this is v${node})`);
    }
  });

  test('Node.js 22 and newer pass', () => {
    for (const node of ['22.0.0', '22.23.3', '24.21.0', '26.12.1', '100.0.0'])
      expect(() => requireSupportedNode({ versions: { node } })).not.toThrow();
  });

  test('outside Node.js nothing is checked: no process (a browser), no versions.node, Bun, Deno', () => {
    expect(() => requireSupportedNode(undefined)).not.toThrow();
    expect(() => requireSupportedNode({})).not.toThrow();
    expect(() => requireSupportedNode({ versions: {} })).not.toThrow();
    expect(() => requireSupportedNode({ versions: { node: '20.0.0', bun: '1.1.0' } })).not.toThrow();
    expect(() => requireSupportedNode({ versions: { node: '20.0.0', deno: '1.40.0' } })).not.toThrow();
  });

  test('the running process passes (the tests run on a supported line)', () => {
    expect(() => requireSupportedNode()).not.toThrow();
  });

  test('NODE_MAJOR_NEEDED is the engines.node of the packages', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { engines: { node: string } };
    expect(pkg.engines.node).toBe(`>=${NODE_MAJOR_NEEDED}`);
  });
});
