// The playground page: a CodeMirror editor on the left, the diagram and summary on the right; cnndsl itself runs in
// a Web Worker (worker.js) under Pyodide, so a slow or hostile spec can never freeze the page.

import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { bracketMatching, HighlightStyle, StreamLanguage, syntaxHighlighting } from "@codemirror/language";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { highlightSelectionMatches, searchKeymap } from "@codemirror/search";
import { EditorSelection, EditorState } from "@codemirror/state";
import {
  drawSelection,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { tags } from "@lezer/highlight";
import { decodeSpec, encodeSpec, MAX_SHARE_CHARS } from "./share.js";

/** Specs longer than this are not sent to Python: the zoo's largest is about 4 KB, and a paste of megabytes is a
 * mistake that deserves a message, not a minute of parsing. */
export const MAX_CHECK_CHARS = 200_000;
/** A check that takes longer than this is stopped by restarting the worker (a pathological spec). `?watchdog_ms=N`
 * lowers it, so the tests can see the restart without a spec that really takes that long. */
const WATCHDOG_MS = Number(new URLSearchParams(location.search).get("watchdog_ms")) || 30_000;
const FILE = "spec.cnn";

const $ = (id) => document.getElementById(id);
const ui = {
  examples: $("examples"),
  depth: $("depth"),
  share: $("share"),
  status: $("status"),
  notice: $("notice"),
  noticeText: $("notice-text"),
  noticeLink: $("notice-link"),
  diagnostics: $("diagnostics"),
  problemCount: $("problem-count"),
  okLine: $("ok-line"),
  explain: $("explain"),
  diagram: $("diagram"),
  summary: $("summary"),
};

// ------------------------------------------------------------------------------------------ helpers ---

const number = (n) => Number(n).toLocaleString("en-US");

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(2) : value} ${units[unit]}`;
}

function si(n) {
  const units = ["", "K", "M", "G", "T"];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 999.5 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit ? `${value.toPrecision(3)}${units[unit]}` : String(value);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/** Show a message above the panels. ``kind`` "check" marks one about checking (too large, stopped), which the next
 * finished check clears. */
function notice(text, link = null, kind = "") {
  ui.notice.dataset.kind = kind;
  ui.noticeText.textContent = text;
  ui.noticeLink.hidden = link === null;
  if (link !== null) ui.noticeLink.value = link;
  ui.notice.hidden = false;
}
$("notice-close").addEventListener("click", () => {
  ui.notice.hidden = true;
});

// --------------------------------------------------------------------------------------- the editor ---

const KEYWORDS = new Set(["network", "block", "defaults", "import", "return"]);
let OPS = new Set();

const cnnLanguage = StreamLanguage.define({
  name: "cnn",
  token(stream) {
    if (stream.eatSpace()) return null;
    if (stream.match(/#.*/)) return "comment";
    if (stream.match(/"[^"\n]*"?/)) return "string";
    if (stream.match(/(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/)) return "number";
    if (stream.match("->")) return "operator";
    if (stream.match(/[|*+\-/%=?]/)) return "operator";
    if (stream.match(/[A-Za-z_][A-Za-z0-9_]*/)) {
      const word = stream.current();
      if (KEYWORDS.has(word)) return "keyword";
      if (stream.match(/\s*=(?!=)/, false)) return "attributeName";
      if (OPS.has(word)) return "builtin";
      if (/^[A-Z]/.test(word)) return "typeName";
      return "variableName";
    }
    stream.next();
    return "punctuation";
  },
  languageData: { commentTokens: { line: "#" } },
});

const highlight = HighlightStyle.define([
  { tag: tags.keyword, color: "#8a3ab9", fontWeight: "600" },
  { tag: tags.comment, color: "#7a8691", fontStyle: "italic" },
  { tag: tags.string, color: "#a0522d" },
  { tag: tags.number, color: "#0b7a75" },
  { tag: tags.operator, color: "#c2410c", fontWeight: "600" },
  { tag: tags.attributeName, color: "#556" },
  { tag: tags.standard(tags.variableName), color: "#1d4ed8" },
  { tag: tags.typeName, color: "#9a4a70", fontWeight: "600" },
  { tag: tags.punctuation, color: "#666" },
]);

const theme = EditorView.theme({
  "&": { height: "100%", fontSize: "14px" },
  ".cm-scroller": { fontFamily: "'DejaVu Sans Mono', 'Menlo', 'Consolas', monospace", lineHeight: "1.5" },
  ".cm-gutters": { background: "#f7f7f9", borderRight: "1px solid #e3e3e8", color: "#9aa" },
  ".cm-activeLine": { background: "#f3f7ff" },
  ".cm-activeLineGutter": { background: "#e8efff" },
  ".cm-lintRange-error": {
    backgroundImage: "none",
    textDecoration: "underline wavy #d12",
    textDecorationSkipInk: "none",
    textUnderlineOffset: "3px",
  },
});

let view = null;
let onTextChange = () => {};
let onCursorMove = () => {};

function createEditor(text) {
  view = new EditorView({
    parent: $("editor"),
    state: EditorState.create({
      doc: text,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightActiveLine(),
        history(),
        drawSelection(),
        bracketMatching(),
        highlightSelectionMatches(),
        lintGutter(),
        cnnLanguage,
        syntaxHighlighting(highlight),
        keymap.of([...defaultKeymap, ...historyKeymap, ...searchKeymap, indentWithTab]),
        theme,
        EditorView.updateListener.of((update) => {
          if (update.docChanged) onTextChange();
          else if (update.selectionSet) onCursorMove();
        }),
      ],
    }),
  });
}

function setText(text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
}

const text = () => view.state.doc.toString();

function position(line, column) {
  const doc = view.state.doc;
  const l = doc.line(Math.min(Math.max(line, 1), doc.lines));
  return l.from + Math.min(Math.max(column - 1, 0), l.length);
}

function select(span) {
  if (!span || span.file !== FILE) return;
  const from = position(span.line, span.column);
  const to = Math.max(from, position(span.end_line, span.end_column));
  view.dispatch({ selection: EditorSelection.range(from, to), scrollIntoView: true });
  view.focus();
}

// ------------------------------------------------------------------------------------- the worker ---

let worker = null;
let pythonReady = false;
let inFlight = null; // {kind, text, timer}
let wantAnalyse = false;
let wantExplain = false;
let lastResult = null; // the last analysis of the current text (ok or not)
let lastOkText = null;
let stuckText = null; // a text whose check was stopped by the watchdog: not retried until it changes
let nextId = 1;
let loadStarted = performance.now();
let expandTarget = null; // instance path to show after a click expanded its block

function startWorker() {
  pythonReady = false;
  loadStarted = performance.now();
  worker = new Worker(new URL("worker.js", import.meta.url), { type: "module" });
  worker.onmessage = (event) => handle(event.data);
  worker.onerror = (event) => {
    ui.status.textContent = "Python failed to start";
    notice(`The Python runtime failed to start: ${event.message || "unknown error"}. Reload the page to retry.`);
  };
}

function handle(message) {
  if (message.kind === "progress") {
    ui.status.textContent = message.text;
    return;
  }
  if (message.kind === "ready") {
    pythonReady = true;
    const seconds = ((performance.now() - loadStarted) / 1000).toFixed(1);
    ui.status.textContent = `Python ready in ${seconds} s`;
    document.body.dataset.ready = "1";
    document.body.dataset.readyMs = String(Math.round(performance.now())); // since navigation start
    document.body.dataset.readyParts = JSON.stringify(message.parts);
    wantAnalyse = true;
    pump();
    return;
  }
  if (message.kind === "failed") {
    ui.status.textContent = "Python failed to start";
    notice(`The Python runtime failed to start: ${message.error.split("\n")[0]}`);
    return;
  }
  if (!inFlight || message.id !== inFlight.id) return;
  const request = inFlight;
  clearTimeout(request.timer);
  inFlight = null;
  if (message.kind === "analysed") {
    if (request.text === text()) showAnalysis(message.result, message.svg, message.ms, request);
  } else if (message.kind === "explained") {
    if (request.text === text()) showExplanation(message.result);
  } else if (message.kind === "error") {
    notice(`cnndsl failed on this spec (please report it): ${message.error}`);
    ui.status.textContent = "Internal error";
  }
  pump();
}

/** Send the most useful pending request, if the worker is free: at most one is in flight, and edits made while it
 * runs collapse into one check of the latest text (no queue builds up however fast one types). */
function pump() {
  if (!pythonReady || inFlight) return;
  const current = text();
  if (wantAnalyse) {
    wantAnalyse = false;
    if (current.length > MAX_CHECK_CHARS) {
      tooLarge(current.length);
      return;
    }
    if (current === stuckText) return;
    send({ kind: "analyse", text: current, depth: ui.depth.value });
    ui.status.textContent = "Checking…";
    return;
  }
  if (wantExplain) {
    wantExplain = false;
    if (current !== lastOkText) {
      showExplanation(null);
      return;
    }
    const head = view.state.selection.main.head;
    const line = view.state.doc.lineAt(head);
    send({ kind: "explain", text: current, line: line.number, column: head - line.from + 1 });
  }
}

function send(request) {
  const id = nextId++;
  const timer = setTimeout(() => watchdog(id), WATCHDOG_MS);
  inFlight = { ...request, id, timer, sent: performance.now() };
  worker.postMessage({ ...request, id });
}

function watchdog(id) {
  if (!inFlight || inFlight.id !== id) return;
  stuckText = inFlight.text;
  inFlight = null;
  worker.terminate();
  notice(
    `Checking this spec took more than ${(WATCHDOG_MS / 1000).toLocaleString("en-US")} s, so it was stopped and ` +
      "Python is restarting. " +
      "Edit the spec to check it again, or run `cnndsl check` on your machine.",
    null,
    "check",
  );
  delete document.body.dataset.ready;
  startWorker();
}

function tooLarge(length) {
  const size = length >= 1_000_000 ? `${(length / 1_000_000).toFixed(1)} MB` : `${Math.round(length / 1000)} KB`;
  const message =
    `This spec is ${size} (${number(length)} characters): the playground checks specs up to ` +
    `${MAX_CHECK_CHARS / 1000} KB. Run \`cnndsl check\` on your machine for larger files.`;
  notice(message, null, "check");
  ui.status.textContent = "Spec too large to check";
  view.dispatch(setDiagnostics(view.state, []));
  ui.diagnostics.replaceChildren();
  ui.problemCount.textContent = "";
  ui.okLine.textContent = "Not checked: the spec is too large.";
  ui.okLine.classList.add("warn");
  markStale(true);
  shown("too-large");
}

// ------------------------------------------------------------------------------------- the results ---

function markStale(stale) {
  ui.diagram.classList.toggle("stale", stale);
  ui.summary.classList.toggle("stale", stale);
}

/** Test and benchmark hooks: how many analyses the page has shown, and the state of the last one. */
function shown(state) {
  document.body.dataset.state = state;
  document.body.dataset.analysed = String(Number(document.body.dataset.analysed || 0) + 1);
}

function showAnalysis(result, svg, ms, request) {
  lastResult = result;
  const took = Math.round(performance.now() - request.sent);
  if (ui.notice.dataset.kind === "check") ui.notice.hidden = true;
  if (!result.ok) {
    showDiagnostics(result.diagnostics);
    ui.status.textContent = `${result.diagnostics.length} error${result.diagnostics.length === 1 ? "" : "s"}`;
    markStale(true);
    showExplanation(null);
    shown("errors");
    return;
  }
  lastOkText = request.text;
  showDiagnostics([]);
  ui.okLine.classList.remove("warn");
  ui.okLine.textContent = `✓ ${result.network}: ${number(result.layers)} layers, no errors`;
  ui.status.textContent = `Checked and drawn in ${took} ms`;
  updateDepthOptions(result);
  showDiagram(svg, result);
  showSummary(result.summary);
  markStale(false);
  wantExplain = true;
  ui.diagram.dataset.pythonMs = String(Math.round(ms.python));
  ui.diagram.dataset.graphvizMs = String(Math.round(ms.graphviz));
  shown("ok");
}

function editorRange(d) {
  // A diagnostic in an imported file is shown at the line of this file that led there (the block call).
  let span = d;
  if (d.file !== FILE) span = (d.chain || []).find((frame) => frame.file === FILE) || { line: 1, column: 1 };
  const from = position(span.line, span.column);
  let to = span === d ? position(d.end_line, d.end_column) : view.state.doc.lineAt(from).to;
  if (to <= from) to = Math.min(from + 1, view.state.doc.lineAt(from).to);
  return { from, to: Math.max(to, from) };
}

function showDiagnostics(list) {
  const items = [];
  const marks = [];
  for (const d of list) {
    const where = d.file === FILE ? `${d.line}:${d.column}` : `${d.file}:${d.line}:${d.column}`;
    const details = [...(d.notes || []).map((n) => `note: ${n}`), ...(d.chain || []).map((f) => `in ${f.call} at ${f.line}:${f.column}`)];
    const { from, to } = editorRange(d);
    marks.push({ from, to, severity: d.severity === "warning" ? "warning" : "error", message: [d.message, ...details].join("\n") });
    const item = el(
      "li",
      { class: `diagnostic ${d.severity}`, title: "show in the editor" },
      el("span", { class: "loc", text: where }),
      el("span", { class: "msg", text: d.message }),
    );
    for (const detail of details) item.append(el("span", { class: "detail", text: detail }));
    item.addEventListener("click", () => {
      view.dispatch({ selection: EditorSelection.range(from, to), scrollIntoView: true });
      view.focus();
    });
    items.push(item);
  }
  ui.diagnostics.replaceChildren(...items);
  ui.problemCount.textContent = list.length ? String(list.length) : "";
  ui.problemCount.classList.toggle("bad", list.length > 0);
  if (list.length) ui.okLine.textContent = "";
  view.dispatch(setDiagnostics(view.state, marks));
}

function updateDepthOptions(result) {
  const chosen = ui.depth.value;
  const options = [
    el("option", { value: "auto", text: result.depth === null ? "auto (all)" : `auto (${result.depth})` }),
  ];
  for (let level = 1; level <= result.max_depth; level += 1) {
    options.push(el("option", { value: String(level), text: String(level) }));
  }
  options.push(el("option", { value: "all", text: "all" }));
  ui.depth.replaceChildren(...options);
  ui.depth.value = [...ui.depth.options].some((o) => o.value === chosen) ? chosen : "auto";
}

let zoom = null; // null: fit the panel's width when the drawing is wider, else a scale factor

function showDiagram(svgText, result) {
  const parsed = new DOMParser().parseFromString(svgText, "image/svg+xml");
  const svg = parsed.documentElement;
  // The SVG comes from Graphviz, but its labels come from the spec: keep only drawing, never script.
  for (const bad of svg.querySelectorAll("script, foreignObject")) bad.remove();
  for (const node of svg.querySelectorAll("*")) {
    for (const attr of [...node.attributes]) if (/^on/i.test(attr.name)) node.removeAttribute(attr.name);
  }
  const box = svg.viewBox.baseVal;
  svg.dataset.width = String(box.width);
  svg.dataset.height = String(box.height);
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  for (const node of svg.querySelectorAll("g.node")) {
    const id = node.querySelector("title")?.textContent;
    const info = result.boxes[id];
    if (!info) continue;
    node.dataset.path = info.path;
    node.classList.add(info.kind === "block" ? "expandable" : "findable");
  }
  ui.diagram.replaceChildren(document.importNode(svg, true));
  applyZoom();
  ui.diagram.dataset.version = String(Number(ui.diagram.dataset.version || 0) + 1);
  if (!document.body.dataset.firstDiagramMs) {
    document.body.dataset.firstDiagramMs = String(Math.round(performance.now())); // since navigation start
  }
  if (expandTarget) {
    const target = [...ui.diagram.querySelectorAll("g.cluster")].find(
      (g) => g.querySelector("a")?.getAttribute("xlink:title") === expandTarget || g.querySelector("title")?.textContent === expandTarget,
    );
    expandTarget = null;
    if (target) {
      target.classList.add("flash");
      target.scrollIntoView({ block: "center", inline: "center" });
    }
  }
}

function applyZoom() {
  const svg = ui.diagram.querySelector("svg");
  if (!svg) return;
  const width = Number(svg.dataset.width);
  const height = Number(svg.dataset.height);
  const room = ui.diagram.clientWidth - 24;
  const scale = zoom ?? Math.min(1.25, room / width);
  svg.style.width = `${width * scale}px`;
  svg.style.height = `${height * scale}px`;
}

$("zoom-in").addEventListener("click", () => {
  zoom = (zoom ?? currentScale()) * 1.25;
  applyZoom();
});
$("zoom-out").addEventListener("click", () => {
  zoom = (zoom ?? currentScale()) / 1.25;
  applyZoom();
});
$("zoom-fit").addEventListener("click", () => {
  zoom = null;
  applyZoom();
});
window.addEventListener("resize", applyZoom);

function currentScale() {
  const svg = ui.diagram.querySelector("svg");
  return svg ? parseFloat(svg.style.width) / Number(svg.dataset.width) : 1;
}

ui.diagram.addEventListener("click", (event) => {
  const node = event.target.closest("g.node");
  if (!node || !lastResult?.ok) return;
  const id = node.querySelector("title")?.textContent;
  const info = lastResult.boxes[id];
  if (!info) return;
  if (info.kind === "block") {
    // Expand: draw one level deeper, then show where the clicked instance went.
    const deeper = info.level + 1;
    ui.depth.value = deeper > lastResult.max_depth ? "all" : String(deeper);
    expandTarget = info.path;
    wantAnalyse = true;
    pump();
  }
  select(info.span);
});

const TOTALS = [
  ["Params", (s) => number(s.trainable_params), "conventions.params"],
  ["Non-trainable", (s) => number(s.non_trainable_params), "conventions.non_trainable_params"],
  ["MACs", (s) => number(s.macs), "conventions.macs"],
  ["FLOPs", (s) => number(s.flops), "conventions.flops"],
  ["Param memory", (s) => bytes(s.param_bytes), "conventions.param_bytes"],
  ["Activations", (s) => bytes(s.activation_bytes), "conventions.activation_bytes"],
  ["Inference peak", (s) => bytes(s.inference_peak_bytes), "conventions.inference_peak_bytes"],
  ["Training memory", (s) => bytes(s.training_bytes), "conventions.training_bytes"],
];

function shape(list) {
  return `[${list.join(", ")}]`;
}

function showSummary(s) {
  const io = el(
    "p",
    { class: "io" },
    `${s.network}: input ${Object.entries(s.inputs).map(([n, v]) => `${n} ${shape(v)}`).join(", ")} → output ` +
      `${Object.entries(s.outputs).map(([n, v]) => `${n} ${shape(v)}`).join(", ")}`,
  );
  const totals = el("dl", { class: "totals" });
  for (const [label, value, note] of TOTALS) {
    const help = note.split(".").reduce((o, k) => o?.[k], s) || "";
    totals.append(el("dt", { text: label, title: help }), el("dd", { text: value(s), title: help, "data-total": label }));
  }
  const table = el("table", { class: "rows" });
  table.append(
    el(
      "thead",
      {},
      el("tr", {}, ...["Layer", "Op", "Output", "Params", "MACs", "RF"].map((h) => el("th", { text: h }))),
    ),
  );
  const body = el("tbody");
  for (const row of s.layers) {
    // The full path, its last part in bold: an indented leaf name alone hides which block it belongs to.
    const parts = row.path.split("/");
    const first = el(
      "td",
      { class: "path", title: row.path },
      el("span", { class: "parent", text: parts.slice(0, -1).map((p) => `${p}/`).join("") }),
      el("span", { class: "leaf", text: parts[parts.length - 1] }),
    );
    const tr = el(
      "tr",
      { class: row.kind },
      first,
      el("td", { class: "label", text: row.label, title: row.label }),
      el("td", { class: "num", text: shape(row.output_shape) }),
      el("td", { class: "num", text: row.params ? number(row.params) : "–", title: si(row.params) }),
      el("td", { class: "num", text: row.macs ? si(row.macs) : "–", title: number(row.macs) }),
      el("td", { class: "num", text: row.receptive_field.global ? "global" : String(row.receptive_field.size[0]) }),
    );
    // The row and its box in the diagram light up together; a click selects where it is written.
    tr.addEventListener("mouseenter", () => highlightBox(row.path, true));
    tr.addEventListener("mouseleave", () => highlightBox(row.path, false));
    tr.addEventListener("click", () => {
      const box = Object.values(lastResult?.boxes ?? {}).find((b) => b.path === row.path);
      if (box) select(box.span);
    });
    body.append(tr);
  }
  table.append(body);
  ui.summary.replaceChildren(io, totals, table);
}

function highlightBox(path, on) {
  for (const node of ui.diagram.querySelectorAll("g.node")) {
    if (node.dataset.path === path) node.classList.toggle("highlight", on);
  }
}

function showExplanation(result) {
  if (!result) {
    const why = lastResult && !lastResult.ok ? "Fix the errors to see explanations." : "";
    ui.explain.replaceChildren(
      el("p", { class: "hint", text: `${why} Put the cursor on a layer or a block call to see its formulas with the numbers filled in.`.trim() }),
    );
    return;
  }
  const head = el("p", { class: "explain-title" }, el("strong", { text: result.title }));
  const where = el("p", {
    class: "explain-where",
    text: `at ${result.location}${result.instances > 1 ? ` · first of ${result.instances} instances` : ""}`,
  });
  ui.explain.replaceChildren(head, where, el("pre", { text: result.text }));
}

// -------------------------------------------------------------------------------------- wiring it up ---

let checkTimer = null;
let explainTimer = null;
let sharedHash = null;

function scheduleCheck() {
  clearTimeout(checkTimer);
  // A short pause so a burst of keystrokes is one check; pump() then keeps only the latest text.
  checkTimer = setTimeout(() => {
    wantAnalyse = true;
    pump();
  }, 40);
}

function scheduleExplain() {
  clearTimeout(explainTimer);
  explainTimer = setTimeout(() => {
    wantExplain = true;
    pump();
  }, 120);
}

async function share() {
  const current = text();
  if (current.length > MAX_SHARE_CHARS) {
    notice(
      `This spec is ${number(current.length)} characters, too large to share as a link ` +
        `(up to ${number(MAX_SHARE_CHARS)}). Share the .cnn file instead.`,
    );
    return;
  }
  const encoded = await encodeSpec(current);
  sharedHash = `#spec=${encoded}`;
  window.history.replaceState(null, "", sharedHash);
  const link = location.href;
  let copied = false;
  try {
    // Headless or insecure contexts may never answer; the link is shown to copy by hand anyway.
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1000));
    await Promise.race([navigator.clipboard.writeText(link), timeout]);
    copied = true;
  } catch {
    copied = false;
  }
  notice(copied ? "Link copied: it holds the whole spec." : "Copy this link: it holds the whole spec.", link);
  ui.noticeLink.select();
}

async function initialText(examples) {
  const hash = location.hash;
  const fallback = examples.find((e) => e.name === "resnet18") ?? examples[0];
  if (hash.startsWith("#spec=")) {
    try {
      const restored = await decodeSpec(hash.slice("#spec=".length));
      sharedHash = hash;
      return { text: restored, example: "" };
    } catch (error) {
      notice(`This share link is damaged or incomplete (${error.message}), so it could not be opened; showing the ${fallback.name} example instead.`);
      window.history.replaceState(null, "", location.pathname + location.search);
      return { text: fallback.text, example: fallback.name };
    }
  }
  if (hash.startsWith("#example=")) {
    const named = examples.find((e) => e.name === decodeURIComponent(hash.slice(9)));
    if (named) return { text: named.text, example: named.name };
    notice(`There is no example named "${decodeURIComponent(hash.slice(9))}"; showing ${fallback.name}.`);
  }
  return { text: fallback.text, example: fallback.name };
}

async function main() {
  startWorker();
  let catalogue;
  try {
    catalogue = await (await fetch(new URL("examples.json", import.meta.url))).json();
  } catch (error) {
    notice(`Could not load the examples (${error.message}). Is the site complete?`);
    catalogue = { examples: [{ name: "empty", text: "" }], ops: [] };
  }
  OPS = new Set(catalogue.ops);
  for (const example of catalogue.examples) {
    ui.examples.append(el("option", { value: example.name, text: example.name }));
  }
  ui.examples.append(el("option", { value: "", text: "(your spec)" }));
  const start = await initialText(catalogue.examples);
  ui.examples.value = start.example;
  createEditor(start.text);
  onTextChange = () => {
    if (sharedHash && location.hash === sharedHash) window.history.replaceState(null, "", location.pathname + location.search);
    sharedHash = null;
    if (ui.examples.value && catalogue.examples.find((e) => e.name === ui.examples.value)?.text !== text()) {
      ui.examples.value = "";
    }
    scheduleCheck();
  };
  onCursorMove = scheduleExplain;
  ui.examples.addEventListener("change", () => {
    const chosen = catalogue.examples.find((e) => e.name === ui.examples.value);
    if (!chosen) return;
    ui.depth.value = "auto";
    zoom = null;
    setText(chosen.text);
    ui.examples.value = chosen.name;
  });
  ui.depth.addEventListener("change", () => {
    wantAnalyse = true;
    pump();
  });
  ui.share.addEventListener("click", () => {
    share().catch((error) => notice(`Could not make a link: ${error.message}`));
  });
  // Test and benchmark hooks: read-only views of the page's state.
  window.cnndslPlayground = { text, setText, view: () => view };
}

main();
