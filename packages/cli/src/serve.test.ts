// `nbd serve` reaches the server library's checks at start, and reports what they refuse
// as a usage error (exit code 2), as it does its own.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ExitCode, exitCodeOf, UsageError } from './errors.js';
import { serveCommand } from './serve.js';

const io = () => ({ stdout: new PassThrough(), stderr: new PassThrough(), env: {} });
const serve = (argv: string[]) => serveCommand(argv, io(), new AbortController().signal);

describe('nbd serve: what the library refuses at start', () => {
  it('an export name over 4096 bytes of UTF-8 is a usage error naming the limit', async () => {
    const err = await serve(['-U', '-', '-e', 'é'.repeat(2049), 'memory', '1M']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect(exitCodeOf(err)).toBe(ExitCode.USAGE);
    expect((err as Error).message).toMatch(/^the name of export 1 \("é+…"\) is 4098 bytes of UTF-8; the NBD limit is 4096$/);
  });

  it('a description over 4096 bytes is a usage error', async () => {
    await expect(serve(['-U', '-', '-D', 'd'.repeat(4097), 'memory', '1M'])).rejects.toThrow(UsageError);
  });
});
