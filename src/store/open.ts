// Turn a parsed reference into the Store that serves it.
import type { Reference } from "../reference.ts";
import { ArchiveStore } from "./archive.ts";
import { LayoutStore } from "./layout.ts";
import { type RegistryOptions, RegistryStore } from "./registry/registry.ts";
import type { Store } from "./store.ts";

export interface StoreOptions {
  /** Create a layout that does not exist yet (destinations). */
  create?: boolean;
  /** Settings for a registry reference. */
  registry?: RegistryOptions;
}

export async function openStore(ref: Reference, opts: StoreOptions = {}): Promise<Store> {
  if (ref.kind === "layout") return await LayoutStore.open(ref.path, { create: opts.create });
  if (ref.kind === "archive") return await ArchiveStore.open(ref.path, { create: opts.create });
  return await RegistryStore.open(ref, opts.registry ?? {});
}
