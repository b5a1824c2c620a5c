// The error of a device or filter that refuses its options when it is built.
import { NbdInvalidArgumentError } from '@nbd/protocol';

/**
 * A device or filter refused its options when it was built. `option` and `value` name
 * the option at fault as the API spells it (`runLength`, 0), so a front end with its own
 * names (a command line's `runlength=`) can say it its way: `${option} ${value} ${reason}`
 * reads as one sentence in either.
 */
export class DeviceOptionError extends NbdInvalidArgumentError {
  /** `'DeviceOptionError'`, as shown in stack traces. */
  override name = 'DeviceOptionError';
  /** Who refused: a device as its class is named (`SparseRandomDevice`), a filter as its function is (`offset`). */
  readonly device: string;
  /** The option at fault, as the options object names it; undefined when no single option is. */
  readonly option: string | undefined;
  /** The value it had (bytes for sizes). */
  readonly value: unknown;
  /** What is wrong, without the device's name (after the option and value when there is one). */
  readonly reason: string;

  constructor(device: string, reason: string, at?: { option: string; value: unknown }) {
    super(at === undefined ? `${device}: ${reason}` : `${device}: ${at.option} ${String(at.value)} ${reason}`);
    this.device = device;
    this.option = at?.option;
    this.value = at?.value;
    this.reason = reason;
  }
}
