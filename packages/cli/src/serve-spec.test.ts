import { describe, expect, test } from 'vitest';
import { UsageError } from './errors.js';
import { deviceSpecOf, parseServe } from './serve-spec.js';

const arity = { memory: 1, file: 1, null: 1 };
const exportsOf = (argv: string[]) =>
  parseServe(argv, arity).exports.map((e) => ({
    name: e.name,
    device: e.device,
    args: e.args,
    params: Object.fromEntries(e.params),
    filters: e.filters,
  }));

describe('nbd serve command line', () => {
  test('one device, parameters and filters around it', () => {
    expect(exportsOf(['--filter', 'cow', 'memory', '1G', 'cow-block-size=4K', '--filter', 'stats'])).toEqual([
      { name: undefined, device: 'memory', args: ['1G'], params: { 'cow-block-size': '4K' }, filters: ['cow', 'stats'] },
    ]);
  });

  test('-e names the current export, or starts the next one; a device word after a full device starts the next', () => {
    expect(exportsOf(['-e', 'a', 'memory', '1M', '-e', 'b', 'file', 'x.img', '-e', 'c', 'null'])).toEqual([
      { name: 'a', device: 'memory', args: ['1M'], params: {}, filters: [] },
      { name: 'b', device: 'file', args: ['x.img'], params: {}, filters: [] },
      { name: 'c', device: 'null', args: [], params: {}, filters: [] },
    ]);
    expect(exportsOf(['memory', '1M', '-e', 'first', '-e', 'second', 'memory', '2M']).map((e) => e.name)).toEqual(['first', 'second']);
    expect(exportsOf(['memory', '1M', '-e', 'a', '-e', 'b', 'file', 'memory']).map((e) => [e.name, e.device, e.args])).toEqual([
      ['a', 'memory', ['1M']],
      ['b', 'file', ['memory']], // a file named "memory": the file's argument comes first
    ]);
  });

  test('listeners, TLS and the rest', () => {
    const s = parseServe(
      [
        '-U',
        '-',
        '-p',
        '0',
        '-i',
        '::1',
        '--listen',
        'nbd+unix:///?socket=/tmp/s',
        '--listen',
        'nbd://[::1]:10900',
        '-t',
        '2',
        '-r',
        '--tls-psk',
        'k.psk',
        'memory',
        '1M',
      ],
      arity,
    );
    expect(s.listen).toEqual([
      { kind: 'private' },
      { kind: 'tcp', host: '::1', port: 0 },
      { kind: 'unix', path: '/tmp/s' },
      { kind: 'tcp', host: '::1', port: 10900 },
    ]);
    expect(s.tls).toEqual({ mode: 'require', certificates: undefined, pskFile: 'k.psk', verifyPeer: false });
    expect(s).toMatchObject({ threads: 2, readOnly: true, run: undefined, printUri: false });
    expect(parseServe(['memory', '1M'], arity).listen).toEqual([{ kind: 'tcp', host: undefined, port: 10809 }]);
    expect(parseServe(['--listen', 'nbd://', '--listen', 'nbd://:10900', 'memory', '1M'], arity).listen).toEqual([
      { kind: 'tcp', host: undefined, port: 10809 },
      { kind: 'tcp', host: undefined, port: 10900 },
    ]);
  });

  test('an nbds… listener makes TLS required (credentials needed, --tls=on/off refused); plain forms follow --tls', () => {
    const tlsOf = (...argv: string[]) => parseServe([...argv, 'memory', '1M'], arity).tls?.mode;
    expect(tlsOf('--listen', 'nbds://127.0.0.1:1', '--tls-psk', 'k')).toBe('require');
    expect(tlsOf('--listen', 'NBDS+UNIX:///?socket=/s', '--tls=require', '--tls-certificates', 'd')).toBe('require');
    expect(tlsOf('-p', '1', '--listen', 'nbds+unix:///?socket=/s', '--tls-psk', 'k')).toBe('require');
    expect(tlsOf('--listen', 'nbd://127.0.0.1:1', '--tls-psk', 'k')).toBe('require');
    expect(tlsOf('--listen', 'nbd://127.0.0.1:1', '--tls=on', '--tls-psk', 'k')).toBe('on');
    expect(tlsOf('-U', '/s', '--tls=off', '--tls-psk', 'k')).toBe('off');
    expect(tlsOf('-U', '/s')).toBeUndefined();
  });

  test.each([
    [[], /missing a device/],
    [['disk=1'], /comes before any device/],
    [['floppy'], /unknown device 'floppy'/],
    [['memory', '1M', '2M'], /unexpected argument '2M' after memory 1M/],
    [['memory', '1M', 'memory', '1M'], /export 2 \(memory\) needs a name/],
    [['-e', 'x', '-e', 'y', 'memory', '1M'], /export "x" has no device/],
    [['-e', 'x', 'memory', '1M', '-e', 'x', 'memory', '1M'], /two exports are named "x"/],
    [['-o', '-e', 'a', 'memory', '1M', '-e', 'b', 'memory', '1M'], /--oldstyle serves one export/],
    [['--tls-verify-peer', 'memory', '1M'], /--tls-verify-peer needs --tls-certificates/],
    [['-o', '--tls-psk', 'keys.psk', 'memory', '1M'], /--oldstyle has no STARTTLS/],
    [['--listen', 'nbd+unix:///', 'memory', '1M'], /needs \?socket=PATH/],
    [['--listen', 'nbds://h:1', 'memory', '1M'], /--listen nbds:\/\/h:1 requires TLS: give --tls-certificates DIR or --tls-psk FILE/],
    [['--listen', 'nbds+unix:///?socket=/s', '--tls=off', 'memory', '1M'], /requires TLS, but --tls=off serves plaintext/],
    [['--listen', 'nbds://h:1', '--tls=on', '--tls-psk', 'k', 'memory', '1M'], /requires TLS, but --tls=on lets plaintext clients in/],
    [['--listen', 'nbds://h:1', '--tls=maybe', '--tls-psk', 'k', 'memory', '1M'], /--tls: expected off, on or require/],
    [['--listen', 'nbd+vsock://3:1', 'memory', '1M'], /vsock address/],
    [['--listen', 'nbds://h:1?tls-psk-file=k', 'memory', '1M'], /has tls-psk-file: a listener takes only \?socket=/],
    [['--listen', 'nbd://u@h:1', 'memory', '1M'], /has a user name/],
    [['--listen', 'nbd://h:1/x', 'memory', '1M'], /names an export/],
    [['--listen', 'nbd://h:99999', 'memory', '1M'], /bad port "99999"/],
    [['-t', '-1', 'memory', '1M'], /option '-t' needs a value/],
    [['-t', '300', 'memory', '1M'], /--threads: expected a whole number from 0 to 256/],
  ])('%j is refused', (argv, message) => {
    expect(() => parseServe(argv, arity)).toThrow(UsageError);
    expect(() => parseServe(argv, arity)).toThrow(message);
  });

  test('a device for nbd attach', () => {
    expect(deviceSpecOf('attach', ['memory', '1G', 'x=1'], arity)).toMatchObject({
      device: 'memory',
      args: ['1G'],
      params: new Map([['x', '1']]),
    });
    expect(() => deviceSpecOf('attach', ['memory', '1G', '2G'], arity)).toThrow(/unexpected argument '2G'/);
  });
});
