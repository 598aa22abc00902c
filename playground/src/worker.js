// The playground's Web Worker: Pyodide runs cnndsl's static path, viz-js turns its dot text into SVG.
// Everything runs here so the page never freezes; the page keeps at most one request in flight (see main.js).
//
// Messages in:  {id, kind: "analyse", text, depth} | {id, kind: "explain", text, line, column}
// Messages out: {kind: "progress", text} | {kind: "ready", ms} | {kind: "failed", error}
//               {id, kind: "analysed", result, svg, ms} | {id, kind: "explained", result} | {id, kind: "error", error}

import { instance as vizInstance } from "@viz-js/viz";

const base = new URL("./", self.location.href);
let api = null;
let viz = null; // a promise of the viz-js instance

function progress(text) {
  postMessage({ kind: "progress", text });
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function start() {
  const started = performance.now();
  progress("Loading Python (Pyodide)…");
  const pyodideModule = await import(new URL("pyodide/pyodide.mjs", base).href);
  const [pyodide, catalogue] = await Promise.all([
    pyodideModule.loadPyodide({ indexURL: new URL("pyodide/", base).href, packages: [] }),
    fetch(new URL("examples.json", base)).then((r) => r.json()),
  ]);
  const parts = { runtime: performance.now() - started };
  progress("Loading cnndsl…");
  const wheels = await Promise.all(catalogue.wheels.map((name) => fetchBytes(new URL(`wheels/${name}`, base))));
  const sitePackages = pyodide.runPython("import sysconfig; sysconfig.get_paths()['purelib']");
  for (const bytes of wheels) pyodide.unpackArchive(bytes, "wheel", { extractDir: sitePackages });
  // The zoo's block libraries, so `import "lib/resnet.cnn"` resolves as it does next to the specs.
  const home = "/home/pyodide/specs";
  for (const [relative, text] of Object.entries(catalogue.library)) {
    const full = `${home}/${relative}`;
    pyodide.FS.mkdirTree(full.slice(0, full.lastIndexOf("/")));
    pyodide.FS.writeFile(full, text);
  }
  pyodide.FS.mkdirTree(home);
  parts.wheels = performance.now() - started - parts.runtime;
  pyodide.runPython(`
import json, os
os.chdir(${JSON.stringify(home)})
from cnndsl import playground_api as _api

def _analyse(text, depth):
    return json.dumps(_api.analyse(text, "spec.cnn", depth))

def _explain(text, line, column):
    return json.dumps(_api.explain_at(text, line, column, "spec.cnn"))
`);
  api = {
    analyse: pyodide.globals.get("_analyse"),
    explain: pyodide.globals.get("_explain"),
  };
  parts.imports = performance.now() - started - parts.runtime - parts.wheels;
  // The first check compiles lark's grammar; do it now, not on the user's first keystroke.
  api.analyse("network Warm(x: [1, 4, 4]) { relu }", "auto");
  parts.grammar = performance.now() - started - parts.runtime - parts.wheels - parts.imports;
  postMessage({ kind: "ready", ms: performance.now() - started, parts });
  // Graphviz's wasm is compiled after Python, not beside it: on a busy machine the two compiles compete for the
  // same cores, and the editor's checks need Python first (the first drawing waits for this).
  viz = vizInstance();
}

const ready = start().catch((error) => {
  postMessage({ kind: "failed", error: String(error && error.stack ? error.stack : error) });
  throw error;
});

async function render(dot) {
  const out = (await viz).render(dot, { format: "svg", engine: "dot" });
  if (out.status !== "success") {
    throw new Error(out.errors.map((e) => e.message).join("; ") || "Graphviz failed");
  }
  return out.output;
}

onmessage = async (event) => {
  const request = event.data;
  try {
    await ready;
    if (request.kind === "analyse") {
      const t0 = performance.now();
      const result = JSON.parse(api.analyse(request.text, request.depth));
      const t1 = performance.now();
      const svg = result.ok ? await render(result.dot) : null;
      const t2 = performance.now();
      postMessage({ id: request.id, kind: "analysed", result, svg, ms: { python: t1 - t0, graphviz: t2 - t1 } });
    } else if (request.kind === "explain") {
      const result = JSON.parse(api.explain(request.text, request.line, request.column));
      postMessage({ id: request.id, kind: "explained", result });
    }
  } catch (error) {
    postMessage({ id: request.id, kind: "error", error: String(error && error.message ? error.message : error) });
  }
};
