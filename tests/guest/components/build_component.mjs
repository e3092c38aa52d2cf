// Wraps a core guest module into a component with jco's JavaScript API (its command line's
// `jco embed --wit DIR` fails in 1.35), from the project's unmodified WIT: wit/ for the
// `messaging` world, wit/wasi-messaging-draft/ for the draft's worlds.
//
//   node build_component.mjs NODE_MODULES WIT_DIR CORE.wasm OUT.wasm [--adapter] [--world=NAME]
//
// --adapter wraps a module that imports wasi_snapshot_preview1 with jco's preview1 reactor
// adapter, so that the component imports WASI 0.2 interfaces instead. --world names the world
// (default `messaging`).
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [, , nodeModules, witDir, input, output, ...flags] = process.argv;
const adapter = flags.includes('--adapter');
const world = flags.find((f) => f.startsWith('--world='))?.slice('--world='.length) ?? 'messaging';
const tools = await import(
  pathToFileURL(join(nodeModules, '@bytecodealliance/jco-transpile/dist/wasm-tools.js')).href);

// componentEmbed takes one WIT source: the package's files joined, its `package` line once.
let packageLine = null;
const bodies = [];
for (const file of readdirSync(witDir).filter((f) => f.endsWith('.wit')).sort()) {
  const text = readFileSync(join(witDir, file), 'utf8');
  const match = text.match(/^\s*package\s+[^;]+;/m);
  if (match) packageLine ??= match[0];
  bodies.push(match ? text.replace(match[0], '') : text);
}
const witSource = `${packageLine}\n${bodies.join('\n')}`;

const embedded = await tools.componentEmbed({
  binary: readFileSync(input), witSource, world,
});
const adapters = adapter
  ? [['wasi_snapshot_preview1', readFileSync(join(nodeModules,
      '@bytecodealliance/jco/lib/wasi_snapshot_preview1.reactor.wasm'))]]
  : [];
writeFileSync(output, await tools.componentNew(embedded, adapters));
