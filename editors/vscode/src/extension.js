// The cnndsl extension: the TextMate grammar and language configuration are declared in package.json; this file
// starts the language server (`cnndsl lsp` on stdio) and restarts it when its settings change.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client = null;

function serverOptions() {
  const config = vscode.workspace.getConfiguration("cnndsl.server");
  const command = config.get("command") || "cnndsl";
  const args = config.get("args") || ["lsp"];
  return { command, args, transport: TransportKind.stdio };
}

async function start() {
  if (!vscode.workspace.getConfiguration("cnndsl.server").get("enabled", true)) {
    return;
  }
  client = new LanguageClient("cnndsl", "cnndsl", serverOptions(), {
    documentSelector: [
      { scheme: "file", language: "cnn" },
      { scheme: "untitled", language: "cnn" },
    ],
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.cnn") },
  });
  try {
    await client.start();
  } catch (error) {
    const { command, args } = serverOptions();
    vscode.window.showErrorMessage(
      `cnndsl: could not start the language server with '${[command, ...args].join(" ")}' (${error.message}). ` +
        "Install cnndsl, or set 'cnndsl.server.command' to its full path."
    );
    client = null;
  }
}

async function stop() {
  if (client) {
    const running = client;
    client = null;
    await running.stop();
  }
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand("cnndsl.restartServer", async () => {
      await stop();
      await start();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("cnndsl.server")) {
        await stop();
        await start();
      }
    })
  );
  await start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
