// Option parsing shared by every command: node:util's parseArgs, with its errors
// turned into one-line usage errors, `--help` and `--version` on every command,
// options whose value is optional (`--map[=CONTEXT]`, `--progress[=FD]`), and
// checked numbers.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { UsageError } from './errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** What a command accepts. */
export interface CommandSpec<O extends Options> {
  /** `serve`, `info`, … */
  name: string;
  options: O;
  /**
   * Options whose value may be left out (`--map` means `--map=base:allocation`): the
   * bare form, alone as an argument, gets this value. Declared with type 'string'.
   */
  optionalValues?: Record<string, string>;
  /** Short flags that stand for the bare form of an optional-value option (`-p` → `--progress`). */
  bareShorts?: Record<string, string>;
}

/** Options every command has. */
export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const satisfies Options;

/** The result of parsing: option values, positionals, and the tokens in order (for commands where order matters). */
export type Parsed<O extends Options> = ReturnType<
  typeof parseArgs<{ options: O & typeof COMMON_OPTIONS; allowPositionals: true; tokens: true; strict: true }>
>;

/** Rewrites the bare forms of optional-value options into `--name=value`, before parseArgs sees them. */
function normalize(argv: readonly string[], spec: CommandSpec<Options>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const long = spec.bareShorts?.[a] ?? (a.startsWith('--') ? a.slice(2) : undefined);
    const bare = long !== undefined ? spec.optionalValues?.[long] : undefined;
    out.push(bare !== undefined && !a.includes('=') ? `--${long}=${bare}` : a);
  }
  return out;
}

/** parseArgs' messages are long and suggest `--`; ours say what is wrong in a few words. */
function usageErrorOf(command: string, e: unknown): UsageError {
  const err = e as { code?: string; message?: string };
  const quoted = /'([^']+)'/.exec(err.message ?? '')?.[1];
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      // `memory -1`: a negative number reads as a short option.
      const negative = /^-\d/.test(quoted ?? '') ? ': sizes and counts cannot be negative' : '';
      return new UsageError(command, `unknown option '${quoted ?? '?'}'${negative}`, { cause: e });
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const missing = /argument missing|ambiguous/.test(err.message ?? '');
      const name = /^Option '(?:-\w, )?(--[\w-]+)/.exec(err.message ?? '')?.[1] ?? quoted ?? '?';
      return new UsageError(command, missing ? `option '${name}' needs a value` : `option '${name}' takes no value`, { cause: e });
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new UsageError(command, `unexpected argument '${quoted ?? '?'}'`, { cause: e });
    default:
      return new UsageError(command, err.message ?? String(e), { cause: e });
  }
}

/** Parses `argv` for one command; any mistake is a UsageError naming it. */
export function parseCommand<O extends Options>(spec: CommandSpec<O>, argv: readonly string[]): Parsed<O> {
  try {
    return parseArgs({
      args: normalize(argv, spec as CommandSpec<Options>),
      options: { ...spec.options, ...COMMON_OPTIONS },
      allowPositionals: true,
      strict: true,
      tokens: true,
    }) as Parsed<O>;
  } catch (e) {
    throw usageErrorOf(spec.name, e);
  }
}

/** A whole number within `[min, max]` from an option's text (`-C 4`, `--timeout 30`). */
export function intOption(
  command: string,
  name: string,
  text: string | undefined,
  range: { min?: number; max?: number } = {},
): number | undefined {
  if (text === undefined) return undefined;
  const min = range.min ?? 0;
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const bounds = max === Number.MAX_SAFE_INTEGER ? `a whole number ≥ ${min}` : `a whole number from ${min} to ${max}`;
    throw new UsageError(command, `${name}: expected ${bounds}, got '${text}'`);
  }
  return n;
}

/** Exactly `count` positionals, named for the error message (`SOURCE DESTINATION`). */
export function expectPositionals(command: string, positionals: readonly string[], names: readonly string[], optional = 0): string[] {
  const need = names.length - optional;
  if (positionals.length < need) throw new UsageError(command, `missing ${names.slice(positionals.length, need).join(' ')}`);
  if (positionals.length > names.length) throw new UsageError(command, `unexpected argument '${positionals[names.length]}'`);
  return [...positionals];
}
