// Run the extension's activate()/deactivate() against stand-ins for the `vscode` and `vscode-languageclient`
// modules, and print what it did as JSON: which server command it started with which arguments, for which
// documents, and what it told the user. Used by tests/test_editors.py; needs node only (no node_modules).
//
//   node test/activate.js '{"command": "/x/cnndsl", "args": ["lsp"], "enabled": true, "failStart": false}'
"use strict";

const Module = require("module");
const path = require("path");

const settings = JSON.parse(process.argv[2] || "{}");
const events = [];
const configurationListeners = [];
const commands = {};

const vscode = {
  workspace: {
    getConfiguration: (section) => ({
      get: (key, fallback) => {
        const value = settings[key];
        events.push(["config", `${section}.${key}`]);
        return value === undefined ? fallback : value;
      },
    }),
    createFileSystemWatcher: (glob) => ({ glob }),
    onDidChangeConfiguration: (listener) => {
      configurationListeners.push(listener);
      return { dispose() {} };
    },
  },
  window: { showErrorMessage: (message) => events.push(["error", message]) },
  commands: {
    registerCommand: (name, callback) => {
      commands[name] = callback;
      return { dispose() {} };
    },
  },
};

class LanguageClient {
  constructor(id, name, server, client) {
    events.push(["client", { id, name, server, documentSelector: client.documentSelector }]);
  }
  async start() {
    if (settings.failStart) throw new Error("spawn cnndsl ENOENT");
    events.push(["start"]);
  }
  async stop() {
    events.push(["stop"]);
  }
}

const stubs = { vscode, "vscode-languageclient/node": { LanguageClient, TransportKind: { stdio: 0 } } };
const load = Module._load;
Module._load = function (request, parent, isMain) {
  return request in stubs ? stubs[request] : load.call(this, request, parent, isMain);
};

async function main() {
  const extension = require(path.join(__dirname, "..", "src", "extension.js"));
  const context = { subscriptions: [] };
  await extension.activate(context);
  events.push(["activated", Object.keys(commands)]);
  settings.args = ["lsp", "--verbose"];
  for (const listener of configurationListeners) {
    await listener({ affectsConfiguration: (section) => section === "cnndsl.server" });
  }
  await extension.deactivate();
  process.stdout.write(JSON.stringify(events.filter((event) => event[0] !== "config")));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
