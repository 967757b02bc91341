// A small strict flag parser for the CLI: every flag is declared, unknown ones are errors, values
// are checked here so commands receive typed options.

/** Bad command-line input: reported as one line, exit code 2. */
export class UsageError extends Error {}

export type FlagKind = 'string' | 'number' | 'list' | 'boolean';

export type FlagSpec = Readonly<Record<string, FlagKind>>;

/** Flags every model command takes: weight storage, outputs and the adapter. */
export const MODEL_COMMAND_FLAGS = {
  '--dtype': 'string',
  '--json': 'string',
  '--out': 'string',
  '--backend': 'string',
  '--adapter': 'string',
} as const satisfies FlagSpec;

export interface ParsedArgs {
  positional: string[];
  strings: Map<string, string>;
  numbers: Map<string, number>;
  lists: Map<string, string[]>;
  booleans: Set<string>;
}

/** Parses `--flag value`, `--flag=value`, repeated list flags and positionals (after `--`, all positional). */
export function parseArgs(argv: readonly string[], spec: FlagSpec): ParsedArgs {
  const out: ParsedArgs = { positional: [], strings: new Map(), numbers: new Map(), lists: new Map(), booleans: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out.positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') || arg === '-') {
      if (arg.startsWith('-') && arg !== '-') throw new UsageError(`unknown option ${arg}`);
      out.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const kind = spec[flag];
    if (!kind) throw new UsageError(`unknown option ${flag}`);
    if (kind === 'boolean') {
      if (eq > 0) throw new UsageError(`${flag} takes no value`);
      out.booleans.add(flag);
      continue;
    }
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || (value.startsWith('--') && value.length > 2)) throw new UsageError(`${flag} needs a value`);
      i++;
    }
    // An empty value (`--json ''`, `--model=`) is a mistake, never a default.
    if (value.trim() === '') throw new UsageError(`${flag} is empty`);
    if (kind === 'list') out.lists.set(flag, [...(out.lists.get(flag) ?? []), value]);
    else if (out.strings.has(flag) || out.numbers.has(flag)) throw new UsageError(`${flag} given twice`);
    else if (kind === 'string') out.strings.set(flag, value);
    else {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new UsageError(`${flag} needs a number, got ${JSON.stringify(value)}`);
      out.numbers.set(flag, n);
    }
  }
  return out;
}

/** A number flag in [min, max], or the default. */
export function numberIn(args: ParsedArgs, flag: string, min: number, max: number, fallback?: number): number | undefined {
  const v = args.numbers.get(flag) ?? fallback;
  if (v !== undefined && !(v >= min && v <= max)) throw new UsageError(`${flag} must be in [${min}, ${max}], got ${v}`);
  return v;
}

/** An integer flag in [min, max], or the default. */
export function integerIn(args: ParsedArgs, flag: string, min: number, max: number, fallback?: number): number | undefined {
  const v = numberIn(args, flag, min, max, fallback);
  if (v !== undefined && !Number.isInteger(v)) throw new UsageError(`${flag} must be an integer, got ${v}`);
  return v;
}
