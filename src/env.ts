// Reading the environment under Deno's permissions.

/**
 * The value of the environment variable `name`; undefined when it is not set, or when
 * Deno's permissions do not let this process read it (a narrowed `--allow-env=A,B`): a
 * variable the program may not read is one the user did not give it. Never throws, so a
 * caller that reads an opt-out switch (`UMOCI_LIBCRYPTO=0`) next to the feature it
 * controls cannot turn the feature off by failing to read the switch.
 */
export function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
