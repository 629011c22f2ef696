// Flags, generated from the settings table: one commander Option per setting, and the values a
// user really typed read back as inputs. Invariant: commander only collects text; every value
// is parsed by the table's parser in build.ts, as a file value is, so a flag and a file key
// accept exactly the same values and fail with the same message.

import { Command, Option } from 'commander';
import type { Input, Inputs } from './build.ts';
import { buildConfig, withTls } from './build.ts';
import { ConfigError } from './parse.ts';
import type { Setting } from './settings.ts';
import { SETTINGS } from './settings.ts';
import type { Config } from './types.ts';

function collect(value: string, previous: string[] | undefined): string[] {
  return previous === undefined ? [value] : [...previous, value];
}

/** The commander Option of a setting. */
function optionOf(setting: Setting & { flag: string }): Option {
  const flags = `${setting.short === undefined ? '' : `${setting.short}, `}${setting.flag}${setting.arg === undefined ? '' : ` ${setting.arg}`}`;
  const choices = setting.choices === undefined ? '' : ` (${setting.choices.join(', ')})`;
  const option = new Option(flags, `${setting.help}${choices}`);
  if (setting.kind === 'list') option.argParser(collect);
  // Shown in --help only: a value not typed is taken from the table when the config is built.
  if (setting.kind === 'value' && setting.default !== undefined) option.default(setting.default);
  return option;
}

/** Adds every setting's flag to `command`; returns them for inputsFromFlags. */
export function addSettingOptions(command: Command): Map<Setting, Option> {
  const options = new Map<Setting, Option>();
  for (const setting of SETTINGS) {
    if (setting.flag === null) continue;
    const option = optionOf(setting as Setting & { flag: string });
    command.addOption(option);
    options.set(setting, option);
  }
  return options;
}

/** What the user typed (not commander's defaults), by scope. */
export interface FlagInputs {
  readonly process: Inputs;
  readonly frontend: Inputs;
}

export function inputsFromFlags(command: Command, options: Map<Setting, Option>): FlagInputs {
  const top = new Map<string, Input>();
  const frontend = new Map<string, Input>();
  const values = command.opts();
  for (const [setting, option] of options) {
    const attribute = option.attributeName();
    if (command.getOptionValueSource(attribute) !== 'cli') continue;
    const typed = values[attribute] as Input['value'];
    const input: Input = {
      // An optional-value flag given bare: commander says `true`; the table says what it means.
      value: typed === true && setting.bare !== undefined ? setting.bare : typed,
      where: setting.flag as string,
      indexed: false,
    };
    // From flags the one frontend lists its backends: the pool's settings are its own.
    (setting.scope === 'process' ? top : frontend).set(setting.key, input);
  }
  return { process: top, frontend };
}

/**
 * Loads the config as the command line says: from the file (process-wide flags override it) or
 * from flags alone (one frontend, `default`). Called again on every reload.
 */
export function configLoader(flags: FlagInputs, file: string | undefined): () => Promise<Config> {
  if (file === undefined) {
    // Under socket activation the listeners may all come from systemd.
    if (!flags.frontend.has('listen') && process.env.LISTEN_FDS === undefined) {
      throw new ConfigError('--listen', 'at least one is required (or --config FILE)');
    }
    return async () => withTls(buildConfig(flags.process, [flags.frontend], '--listen'));
  }
  const [frontendFlag] = flags.frontend.values();
  if (frontendFlag !== undefined) {
    throw new ConfigError(
      frontendFlag.where,
      'cannot be used with --config (set it in the file, per frontend)',
    );
  }
  // The file's parsers (yaml, zod: ~150 ms to load) only when there is a file.
  return async () => (await import('./file.ts')).loadConfigFile(file, flags.process);
}

/** The loader `fulcrum run ARGS` would use: the same options, parsed by commander. */
export function loaderFromArgs(args: readonly string[]): () => Promise<Config> {
  const command = new Command('run').exitOverride().option('-c, --config <file>');
  const options = addSettingOptions(command);
  command.parse(args, { from: 'user' });
  return configLoader(inputsFromFlags(command, options), command.opts().config);
}
