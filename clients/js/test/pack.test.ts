// `npm pack` makes the package from the built dist/: JavaScript with type declarations, and
// nothing of the tests or the TypeScript sources.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { it } from "node:test";

it("npm pack ships dist/*.js with their .d.ts and the README", () => {
  const root = resolve(fileURLToPath(import.meta.url), "../..");
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: root }).toString();
  const [pack] = JSON.parse(out) as Array<{ name: string; files: Array<{ path: string }> }>;
  assert.equal(pack!.name, "witmq");
  const files = pack!.files.map((f) => f.path).sort();
  for (const module of ["index", "client", "connection", "codec", "errors", "message", "stream"]) {
    assert.ok(files.includes(`dist/${module}.js`), `dist/${module}.js in ${files.join(", ")}`);
    assert.ok(files.includes(`dist/${module}.d.ts`), `dist/${module}.d.ts in ${files.join(", ")}`);
  }
  assert.ok(files.includes("README.md") && files.includes("package.json"));
  assert.deepEqual(files.filter((f) => !f.startsWith("dist/") && f !== "README.md" && f !== "package.json"), []);
});
