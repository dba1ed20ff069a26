// The connector component as scripts/build.mjs transpiled it into
// `generated/`: its core modules compiled once per process (and handed to
// workers as compiled modules), and instances made with the imports a host
// supplies.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';

export const GENERATED_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'generated');

/** Thrown when the package was installed without its build. */
export class NotBuiltError extends Error {}

function checkBuilt() {
  if (!existsSync(path.join(GENERATED_DIR, 'connector.js'))) {
    throw new NotBuiltError(
      `the connector component is not built: run \`npm run build\` in ${path.dirname(GENERATED_DIR)}`,
    );
  }
}

let modules = null;

/**
 * The component's core modules, compiled once, off the event loop:
 * resolves `{ fileName: Module }`.
 */
export function coreModules() {
  if (!modules) {
    checkBuilt();
    const names = readdirSync(GENERATED_DIR).filter((name) => /^connector\.core\d*\.wasm$/.test(name));
    modules = Promise.all(names.map((name) => WebAssembly.compile(readFileSync(path.join(GENERATED_DIR, name)))))
      .then((compiled) => Object.fromEntries(names.map((name, i) => [name, compiled[i]])));
  }
  return modules;
}

let generated = null;

/** The transpiled bindings' `instantiate`. */
export async function loadBindings() {
  checkBuilt();
  generated ??= import(pathToFileURL(path.join(GENERATED_DIR, 'connector.js')).href);
  return generated;
}

/**
 * WASI for the guest: no files, no environment, no network; only clocks,
 * random numbers and stderr (where a guest panic goes). The guest reaches
 * brokers through the `mqtt` import alone.
 */
export function wasiImports() {
  const shim = new WASIShim({
    sandbox: { preopens: {}, env: {}, args: ['connector'], enableNetwork: false },
  });
  return shim.getImportObject();
}

/**
 * A new instance: its `operations` export.
 *
 * @param bindings what `loadBindings` gave
 * @param modules what `coreModules` gave (or their clones in a worker)
 * @param host `{ Client, log }`: the `client` resource class of the `mqtt`
 *   import and the `log` function of `logging`
 */
export function instantiate(bindings, modules, host) {
  const imports = {
    ...wasiImports(),
    'mqtt-connector:connector/types': {},
    'mqtt-connector:connector/mqtt': { Client: host.Client },
    'mqtt-connector:connector/logging': { log: host.log },
  };
  const root = bindings.instantiate((name) => {
    const module = modules[name];
    if (!module) {
      throw new Error(`core module ${name} is missing from ${GENERATED_DIR}`);
    }
    return module;
  }, imports);
  return root.operations;
}
