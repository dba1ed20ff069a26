// Builds what the package runs: copies the connector component that cargo
// builds (running `cargo build -p host-shim` when it is missing) and
// transpiles it to JavaScript with jco, into `generated/`.
//
// Environment:
//   CONNECTOR_WASM     another connector.wasm to use (no cargo build then)
//   CARGO_TARGET_DIR   where cargo puts its output, as cargo reads it

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoRoot = path.resolve(packageDir, '..', '..');
const outDir = path.join(packageDir, 'generated');

function fail(message) {
  console.error(`build: ${message}`);
  process.exit(1);
}

function wasmPath() {
  if (process.env.CONNECTOR_WASM) {
    return path.resolve(process.env.CONNECTOR_WASM);
  }
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR)
    : path.join(repoRoot, 'target');
  return path.join(targetDir, 'connector-wasm', 'wasm32-wasip2', 'release', 'connector.wasm');
}

function cargoBuild() {
  if (!existsSync(path.join(repoRoot, 'Cargo.toml'))) {
    fail(
      `no cargo workspace at ${repoRoot}: build the connector there with ` +
        '`cargo build -p host-shim`, or set CONNECTOR_WASM to a connector.wasm',
    );
  }
  console.log('build: connector.wasm is missing; running `cargo build -p host-shim`');
  const run = spawnSync('cargo', ['build', '-p', 'host-shim'], { cwd: repoRoot, stdio: 'inherit' });
  if (run.error) {
    fail(`cannot run cargo (${run.error.message}): install Rust, or set CONNECTOR_WASM`);
  }
  if (run.status !== 0) {
    fail(`cargo build -p host-shim failed with exit code ${run.status}`);
  }
}

function sha256(file) {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** The jco version the package pins, from its package.json. */
function pinnedJco() {
  const pkg = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8'));
  return pkg.devDependencies['@bytecodealliance/jco'];
}

function transpile(wasm) {
  // Sync instantiation: the worker supplies the imports per instance, and
  // every import is a plain synchronous function (see lib/worker.mjs).
  const args = ['transpile', wasm, '-o', outDir, '--name', 'connector',
    '--instantiation', 'sync', '--no-typescript', '--quiet'];
  let run;
  try {
    const require = createRequire(import.meta.url);
    const jco = path.join(path.dirname(require.resolve('@bytecodealliance/jco')), 'jco.js');
    run = spawnSync(process.execPath, [jco, ...args], { stdio: 'inherit' });
  } catch {
    // Installed into a Node-RED user directory from this folder, npm runs
    // this before the package's own dependencies are there: fetch the
    // pinned jco for this one run.
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    run = spawnSync(npm, ['exec', '--yes', `--package=@bytecodealliance/jco@${pinnedJco()}`, '--', 'jco', ...args],
      { stdio: 'inherit', cwd: packageDir });
    if (run.error) {
      fail(`cannot run npm exec for jco (${run.error.message}): run \`npm install\` in ${packageDir} first`);
    }
  }
  if (run.status !== 0) {
    fail(`jco transpile failed with exit code ${run.status}`);
  }
}

/**
 * Installed into a Node-RED user directory with `npm install FOLDER`, npm
 * links this folder and runs this script, but installs none of the
 * package's dependencies: install the runtime ones here, as the lock file
 * pins them.
 */
function ensureRuntimeDependencies() {
  const require = createRequire(import.meta.url);
  const pkg = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8'));
  const missing = Object.keys(pkg.dependencies).filter((name) => {
    try {
      require.resolve(name, { paths: [packageDir] });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  console.log(`build: installing the runtime dependencies (${missing.join(', ')})`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const run = spawnSync(npm, ['install', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'],
    { stdio: 'inherit', cwd: packageDir });
  if (run.status !== 0) {
    fail(`npm install of the runtime dependencies failed: run \`npm install\` in ${packageDir}`);
  }
}

const source = wasmPath();
if (!existsSync(source)) {
  if (process.env.CONNECTOR_WASM) {
    fail(`CONNECTOR_WASM names ${source}, which does not exist`);
  }
  cargoBuild();
  if (!existsSync(source)) {
    fail(`cargo built, but ${source} is still missing`);
  }
}

const stamp = path.join(outDir, 'connector.sha256');
const digest = sha256(source);
if (existsSync(stamp) && readFileSync(stamp, 'utf8') === digest && existsSync(path.join(outDir, 'connector.js'))) {
  console.log(`build: generated/ is up to date with ${source}`);
} else {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  copyFileSync(source, path.join(outDir, 'connector.wasm'));
  transpile(path.join(outDir, 'connector.wasm'));
  // The bindings are ES modules; the package itself is CommonJS for Node-RED.
  writeFileSync(path.join(outDir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(stamp, digest);
  console.log(`build: transpiled ${source} into generated/`);
}
ensureRuntimeDependencies();
