#!/usr/bin/env node
// A native-solc face for solc-js, for forge: `--version` in the native format and
// `--standard-json` from stdin. Calls the node API so nothing but JSON reaches stdout.
'use strict';
const fs = require('fs');
const path = require('path');

// solc-js is found the way Node finds any package: from the project forge runs in (its node_modules), then from
// beside this wrapper (the Infera repository, or an install that hoisted it). Nothing is downloaded.
function loadSolc() {
  const from = [process.cwd(), __dirname];
  try {
    return require(require.resolve('solc', { paths: from }));
  } catch (err) {
    if (err && err.code !== 'MODULE_NOT_FOUND') throw err;
    process.stderr.write(
      'infera solc wrapper: the npm package "solc" is not installed (looked from ' + from.join(' and ') + ').\n' +
        'Install the compiler next to your foundry.toml: npm install --save-dev solc@0.8.37\n' +
        '(any solc-js >= 0.8.24 compiles @infera/contracts; 0.8.37 is the version its tests use)\n',
    );
    process.exit(1);
  }
}

const solc = loadSolc();
const args = process.argv.slice(2);

if (args.includes('--version') || args.includes('-v')) {
  // solc-js reports "0.8.37+commit.f401782d.Emscripten.clang"; forge parses the native line.
  const version = solc.version().replace(/\.Emscripten\.clang$/, '.Linux.g++');
  process.stdout.write('solc, the solidity compiler commandline interface\nVersion: ' + version + '\n');
  process.exit(0);
}

if (!args.includes('--standard-json')) {
  process.stderr.write('infera solc wrapper: only --version and --standard-json are supported\n');
  process.exit(2);
}

function optionValues(name) {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name && i + 1 < args.length) out.push(args[i + 1]);
    else if (args[i].startsWith(name + '=')) out.push(args[i].slice(name.length + 1));
  }
  return out;
}

const searchRoots = [process.cwd(), ...optionValues('--base-path'), ...optionValues('--include-path')];

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath)
    ? [importPath]
    : searchRoots.map((r) => path.resolve(r, importPath));
  for (const candidate of candidates) {
    try {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    } catch (_) {
      // try the next root
    }
  }
  return { error: 'File not found: ' + importPath };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
