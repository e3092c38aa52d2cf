#!/usr/bin/env bash
# Checks that the WIT packages in wit/ and wit/wasmcloud-messaging/ parse and resolve with a
# standard WIT parser (wasm-tools, as shipped inside the npm package @bytecodealliance/jco): for
# each world it embeds the world into a dummy core module, wraps that into a component and prints
# the component's WIT back.
#
# Usage: tools/check-wit.sh            (installs jco into a temporary directory)
#        JCO_DIR=/some/dir tools/check-wit.sh   (reuses or installs jco there)
# Not part of the test suite: it needs the npm registry.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wit_dir="$root/wit"

if [[ -z "${JCO_DIR:-}" ]]; then
  JCO_DIR="$(mktemp -d)"
  trap 'rm -rf "$JCO_DIR"' EXIT
fi
if [[ ! -d "$JCO_DIR/node_modules/@bytecodealliance/jco-transpile" ]]; then
  echo "installing @bytecodealliance/jco into $JCO_DIR" >&2
  npm install --silent --no-audit --no-fund --prefix "$JCO_DIR" @bytecodealliance/jco >&2
fi

# The wasm-tools build inside jco cannot open host paths in some environments, so the package is
# handed over as one source text: the files of wit/ concatenated, each file's `package` line
# checked to be the same and kept once.
node --input-type=module - "$wit_dir" "$JCO_DIR" <<'JS'
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [witDir, jcoDir] = process.argv.slice(2);
const tools = await import(pathToFileURL(path.join(
    jcoDir, 'node_modules/@bytecodealliance/jco-transpile/dist/wasm-tools.js')).href);

// Each package directory: the package it must declare and, per world, lines its WIT must show.
const packages = [
  [witDir, 'wasi:messaging@0.2.0-draft', {
    imports: ['import wasi:messaging/producer@0.2.0-draft', 'import wasi:messaging/consumer@0.2.0-draft'],
    messaging: ['import wasi:messaging/producer@0.2.0-draft', 'import wasi:messaging/consumer@0.2.0-draft',
                'export wasi:messaging/messaging-guest@0.2.0-draft'],
  }],
  [path.join(witDir, 'wasmcloud-messaging'), 'wasmcloud:messaging@0.2.0', {
    messaging: ['import wasmcloud:messaging/consumer@0.2.0', 'export wasmcloud:messaging/handler@0.2.0'],
  }],
];
let failed = false;
for (const [dir, expectedPackage, expect] of packages) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.wit')).sort();
  if (files.length === 0) throw new Error(`no .wit files in ${dir}`);
  let header = null;
  const bodies = [];
  for (const f of files) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    const m = text.match(/^package\s+([^;]+);\s*$/m);
    if (!m) throw new Error(`${f}: no package declaration`);
    if (header !== null && header !== m[1]) {
      throw new Error(`${f}: package ${m[1]} differs from ${header}`);
    }
    header = m[1];
    bodies.push(`// ---- ${f}\n` + text.replace(m[0], ''));
  }
  if (header !== expectedPackage) {
    throw new Error(`${dir}: package is ${header}, expected ${expectedPackage}`);
  }
  const source = `package ${header};\n` + bodies.join('\n');
  for (const [world, lines] of Object.entries(expect)) {
    try {
      const core = await tools.componentEmbed({ dummy: true, witSource: source, world });
      const component = await tools.componentNew(core, []);
      const printed = await tools.componentWit(component);
      for (const line of lines) {
        if (!printed.includes(line)) throw new Error(`world ${world}: missing "${line}" in\n${printed}`);
      }
      console.log(`${header} world ${world}: ok (${files.join(', ')})`);
    } catch (e) {
      failed = true;
      console.error(`${header} world ${world}: FAILED: ${e.message ?? e}`);
    }
  }
}
process.exit(failed ? 1 : 0);
JS
