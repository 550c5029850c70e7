#!/usr/bin/env node
// Writes abi/<Name>.json, one ABI array per public contract, from forge's build output (out/). Runs before
// `npm pack` / `npm publish` (the package's "prepack" script), so the package always carries the ABIs of the
// sources it ships. The Coordinator's ABI includes IConsensus: the consensus functions, events and errors are served
// by the ConsensusModule through the Coordinator's fallback, at the Coordinator's address.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'out');
const dest = path.join(root, 'abi');

// Every source under src/ except the shared internals (CoordinatorCore holds storage, not an interface).
const skip = new Set(['CoordinatorCore']);

function sources(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(full);
    return entry.name.endsWith('.sol') ? [entry.name.slice(0, -4)] : [];
  });
}

function abiOf(name) {
  const file = path.join(out, name + '.sol', name + '.json');
  if (!fs.existsSync(file)) {
    process.stderr.write('export-abi: ' + file + ' is missing; run `forge build` in ' + root + ' first\n');
    process.exit(1);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8')).abi;
}

function merged(abi, extra) {
  const key = (item) => item.type + ':' + (item.name || '') + '(' + (item.inputs || []).map((i) => i.type).join(',') + ')';
  const seen = new Set(abi.map(key));
  return abi.concat(extra.filter((item) => !seen.has(key(item))));
}

fs.rmSync(dest, { recursive: true, force: true });
fs.mkdirSync(dest);
const names = sources(path.join(root, 'src')).filter((n) => !skip.has(n)).sort();
for (const name of names) {
  let abi = abiOf(name);
  if (name === 'Coordinator') abi = merged(abi, abiOf('IConsensus'));
  fs.writeFileSync(path.join(dest, name + '.json'), JSON.stringify(abi, null, 2) + '\n');
}
process.stdout.write('export-abi: wrote ' + names.length + ' ABIs to ' + path.relative(process.cwd(), dest) + '/\n');
