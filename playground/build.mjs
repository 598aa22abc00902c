// Builds the static playground into build/playground/ (run by `make playground`; needs `npm ci` first).
//
// Everything the page loads is copied or generated here, so a plain static server works offline:
//   app.js, worker.js   the page and its Web Worker, bundled by esbuild (CodeMirror in the page, viz-js in the worker)
//   pyodide/            the runtime from the npm package `pyodide` (wasm, stdlib zip, lock file)
//   wheels/             cnndsl built from this tree, and lark and graphviz (pure Python) from PyPI, pinned in
//                       playground/requirements.txt
//   examples.json       every spec in specs/ (discovered, so new zoo specs appear without a code change), and
//                       every file under specs/lib/ that they import
// PYTHON (default python3) runs pip; it must have setuptools and wheel (the dev extra).

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const out = path.resolve(process.env.PLAYGROUND_OUT ?? path.join(root, "build", "playground"));
const python = process.env.PYTHON ?? "python3";

function step(what) {
  console.log(`playground: ${what}`);
}

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });

step("bundling app.js and worker.js");
await esbuild.build({
  entryPoints: { app: path.join(here, "src", "main.js"), worker: path.join(here, "src", "worker.js") },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: false,
  outdir: out,
  logLevel: "warning",
  // pyodide.mjs is loaded at run time from ./pyodide/, next to its wasm; it is not bundled.
  external: ["./pyodide/pyodide.mjs"],
});

step("copying static files");
for (const name of ["index.html", "style.css"]) {
  fs.copyFileSync(path.join(here, "src", name), path.join(out, name));
}

step("copying the Pyodide runtime");
const pyodideSrc = path.join(here, "node_modules", "pyodide");
const pyodideOut = path.join(out, "pyodide");
fs.mkdirSync(pyodideOut);
for (const name of [
  "pyodide.mjs",
  "pyodide.asm.mjs",
  "pyodide.asm.wasm",
  "python_stdlib.zip",
  "pyodide-lock.json",
]) {
  fs.copyFileSync(path.join(pyodideSrc, name), path.join(pyodideOut, name));
}

step("building the cnndsl wheel and fetching lark and graphviz");
const wheels = path.join(out, "wheels");
fs.mkdirSync(wheels);
const pip = (...args) =>
  execFileSync(python, ["-m", "pip", "--disable-pip-version-check", "-q", ...args], {
    stdio: "inherit",
    cwd: root,
  });
// setuptools leaves build/lib and an egg-info beside the sources; both are ignored by git.
pip("wheel", "--no-deps", "--no-build-isolation", "-w", wheels, root);
pip(
  "download",
  "--no-deps",
  "--only-binary=:all:",
  "-d",
  wheels,
  "-r",
  path.join(here, "requirements.txt"),
);
const wheelFiles = fs
  .readdirSync(wheels)
  .filter((name) => name.endsWith(".whl"))
  .sort();
for (const name of wheelFiles) {
  if (!name.endsWith("-py3-none-any.whl")) {
    throw new Error(`${name} is not a pure-Python wheel; Pyodide cannot load it`);
  }
}

step("collecting the zoo specs");
const specs = path.join(root, "specs");
const examples = fs
  .readdirSync(specs)
  .filter((name) => name.endsWith(".cnn"))
  .sort()
  .map((name) => ({ name: name.replace(/\.cnn$/, ""), text: fs.readFileSync(path.join(specs, name), "utf8") }));
const library = {};
function walk(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full);
    else if (entry.name.endsWith(".cnn")) library[path.relative(specs, full)] = fs.readFileSync(full, "utf8");
  }
}
for (const entry of fs.readdirSync(specs, { withFileTypes: true })) {
  if (entry.isDirectory()) walk(path.join(specs, entry.name));
}
// Op names for the editor's highlighting come from the registry, so a new op is highlighted without a change here.
const ops = JSON.parse(
  execFileSync(python, ["-c", "import json; from cnndsl import ops; print(json.dumps(sorted(ops.REGISTRY)))"], {
    cwd: root,
    env: { ...process.env, PYTHONPATH: root },
  }).toString(),
);
fs.writeFileSync(
  path.join(out, "examples.json"),
  JSON.stringify({ examples, library, ops, wheels: wheelFiles }),
);

console.log(
  `playground: built ${out} (${examples.length} examples, ${Object.keys(library).length} library files, ` +
    `wheels: ${wheelFiles.join(", ")})`,
);
